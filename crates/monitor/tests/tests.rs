//! The monitor over a real store and coordinator: the reference fleet's models and readings,
//! scored by hourly runs — one with a broken model, one with a task that fails for good — so
//! the API, `/metrics`, the pages and model health are checked against what the runs did.

mod api;
mod fleet;
mod health;
mod metrics;
mod pages;
mod pipeline;
