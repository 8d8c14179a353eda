//! One load's memory budget. A hostile file can ask for far more memory than its size: a
//! kilobyte of bz2 inflates to a gigabyte of DUP opcodes, each pushing a stack entry; a few
//! bytes per EMPTY_LIST + POP leave an object behind; one array shared a thousand times is
//! copied a thousand times by whoever reads it. Every allocation a file can cause — the
//! decompressed stream, the stack, marks and memo, the arena's objects and what they hold, and
//! what the model layer builds from them — is charged here first, and the load stops with an
//! error once the budget is spent, before the allocation happens (within one opcode's worth).
//!
//! Charges are never refunded: a stack that shrinks again was still that large once. Growable
//! buffers (the stack, memo, arena, lists and dicts) are charged at [`GROWTH`] times what they
//! hold, so the doubling that grows one is paid for before the allocator is asked for it.

use std::cell::Cell;

/// The factor growable buffers are charged at: a `Vec` doubles its capacity when it is full.
pub const GROWTH: usize = 2;

/// What a load may allocate, in bytes, and what it has allocated so far.
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    /// Bytes charged so far; a `Cell` because a load is single-threaded and every part of it
    /// (VM, numpy, the model layer) charges through a shared reference.
    used: Cell<usize>,
}

/// A charge that would take a load past its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverBudget {
    /// The budget, in bytes.
    pub limit: usize,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Budget {
        Budget {
            limit,
            used: Cell::new(0),
        }
    }

    /// Charges `bytes` about to be allocated; an error (and nothing charged) if that would pass
    /// the limit.
    pub fn charge(&self, bytes: usize) -> Result<(), OverBudget> {
        match self.used.get().checked_add(bytes) {
            Some(total) if total <= self.limit => {
                self.used.set(total);
                Ok(())
            }
            _ => Err(OverBudget { limit: self.limit }),
        }
    }

    /// Bytes charged so far.
    pub fn used(&self) -> usize {
        self.used.get()
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.limit - self.used.get()
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// Charges a growing structure by its high-water mark: what it holds now beyond what was
/// already charged for it.
#[derive(Debug, Default)]
pub(crate) struct Meter {
    charged: usize,
}

impl Meter {
    /// Charges the growth of a structure whose footprint is now `bytes`.
    pub(crate) fn update(&mut self, bytes: usize, budget: &Budget) -> Result<(), OverBudget> {
        if bytes > self.charged {
            budget.charge(bytes - self.charged)?;
            self.charged = bytes;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_stop_at_the_limit_and_meters_charge_growth_only() {
        let b = Budget::new(100);
        b.charge(60).unwrap();
        assert_eq!(b.charge(41), Err(OverBudget { limit: 100 }));
        assert_eq!(b.used(), 60, "a refused charge charges nothing");
        let mut m = Meter::default();
        m.update(30, &b).unwrap();
        m.update(10, &b).unwrap();
        m.update(35, &b).unwrap();
        assert_eq!(b.used(), 95);
        assert!(m.update(50, &b).is_err());
        assert!(b.charge(usize::MAX).is_err());
    }
}
