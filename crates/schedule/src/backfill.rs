//! Backfill: one run per window of a schedule over a past range.
