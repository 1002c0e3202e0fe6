//! A grant-copy batch as an object (Linux's `xenvif_copy_state`).
//!
//! Ops are collected with the owner each belongs to (a packet of the tx pass, or the position of
//! the rx response to patch among those put this pass); the batch flushes with one hypercall
//! when full or at the end of a pass and reports every failed op to the caller, who patches it
//! into its response.

use hypervisor::{CopyOp, GrantOps, GrantStatus};

/// Collected grant-copy ops and their owners.
#[derive(Debug)]
pub struct CopyBatch {
    ops: Vec<CopyOp>,
    owners: Vec<u32>,
    max: usize,
    /// Hypercalls made (for the profile and the ladder).
    pub hypercalls: u64,
    /// Ops submitted.
    pub ops_done: u64,
}

impl CopyBatch {
    /// A batch that flushes every `max` ops (1 = one hypercall per op).
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        Self {
            ops: Vec::with_capacity(max),
            owners: Vec::with_capacity(max),
            max,
            hypercalls: 0,
            ops_done: 0,
        }
    }

    /// Adds an op; flushes first when the batch is full, reporting failures to `failed`.
    #[inline]
    pub fn push<D: GrantOps>(
        &mut self,
        dom: &D,
        op: CopyOp,
        owner: u32,
        failed: &mut impl FnMut(u32, GrantStatus),
    ) {
        self.ops.push(op);
        self.owners.push(owner);
        if self.ops.len() >= self.max {
            self.flush(dom, failed);
        }
    }

    /// Whether ops are waiting.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// One grant-copy call for every collected op; each failed op's owner and status go to
    /// `failed`. If the call itself fails, every op of the batch is reported failed.
    pub fn flush<D: GrantOps>(&mut self, dom: &D, failed: &mut impl FnMut(u32, GrantStatus)) {
        if self.ops.is_empty() {
            return;
        }
        self.hypercalls += 1;
        self.ops_done += self.ops.len() as u64;
        match dom.grant_copy(&mut self.ops) {
            Ok(()) => {
                for (op, owner) in self.ops.iter().zip(&self.owners) {
                    if op.status != GrantStatus::Okay {
                        failed(*owner, op.status);
                    }
                }
            }
            Err(_) => {
                for owner in &self.owners {
                    failed(*owner, GrantStatus::GeneralError);
                }
            }
        }
        self.ops.clear();
        self.owners.clear();
    }
}
