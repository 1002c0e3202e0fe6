//! A grant-copy batch as an object (Linux's `xenvif_copy_state`), shared by every queue of a
//! pass: one `GNTTABOP_copy` carries the ops of many vifs, so a backend serving many guests
//! still fills its hypercalls (64 guests each with a few ops per pass made 3.3 copies per
//! hypercall when each vif flushed its own).
//!
//! Ops are collected with their owner: the queue's slot in the pass and the item within it (a
//! packet of the tx pass, or the position of an rx response). The batch flushes with one
//! hypercall when full or when the pass says so, and keeps every failed op's owner for the pass
//! to route back to its queue, which patches the failure into its response.

use hypervisor::{CopyOp, GrantOps, GrantStatus};

/// Whose an op is: a queue's slot in the pass, and an item of that queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Owner {
    /// The queue's slot in the pass (its position among every queue served).
    pub slot: u32,
    /// The packet or response position within the queue's part of the pass.
    pub item: u32,
}

/// Collected grant-copy ops and their owners.
#[derive(Debug)]
pub struct CopyBatch {
    ops: Vec<CopyOp>,
    owners: Vec<Owner>,
    max: usize,
    /// Failed ops since [`CopyBatch::take_failed`], in submission order.
    failed: Vec<(Owner, GrantStatus)>,
    /// Per slot: the hypercalls its ops went in since [`CopyBatch::begin_pass`].
    calls: Vec<u32>,
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
            failed: Vec::new(),
            calls: Vec::new(),
            hypercalls: 0,
            ops_done: 0,
        }
    }

    /// Starts a pass over `slots` queues: per-slot hypercall counts from zero.
    pub fn begin_pass(&mut self, slots: usize) {
        debug_assert!(
            self.ops.is_empty(),
            "a previous pass left grant copies unflushed"
        );
        self.calls.clear();
        self.calls.resize(slots, 0);
    }

    /// Adds an op; flushes first when the batch is full.
    #[inline]
    pub fn push<D: GrantOps>(&mut self, dom: &D, op: CopyOp, owner: Owner) {
        self.ops.push(op);
        self.owners.push(owner);
        if self.ops.len() >= self.max {
            self.flush(dom);
        }
    }

    /// Whether ops are waiting.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// One grant-copy call for every collected op; each failed op's owner and status are kept
    /// for [`CopyBatch::take_failed`]. If the call itself fails, every op of the batch failed.
    pub fn flush<D: GrantOps>(&mut self, dom: &D) {
        if self.ops.is_empty() {
            return;
        }
        self.hypercalls += 1;
        self.ops_done += self.ops.len() as u64;
        // The slots whose ops travel in this call (an owner's ops are pushed together).
        let mut last = None;
        for o in &self.owners {
            if last != Some(o.slot) {
                last = Some(o.slot);
                if let Some(c) = self.calls.get_mut(o.slot as usize) {
                    *c += 1;
                }
            }
        }
        match dom.grant_copy(&mut self.ops) {
            Ok(()) => {
                for (op, owner) in self.ops.iter().zip(&self.owners) {
                    if op.status != GrantStatus::Okay {
                        self.failed.push((*owner, op.status));
                    }
                }
            }
            Err(_) => {
                for owner in &self.owners {
                    self.failed.push((*owner, GrantStatus::GeneralError));
                }
            }
        }
        self.ops.clear();
        self.owners.clear();
    }

    /// The failed ops since the last call, in submission order (so by slot, then item).
    pub fn take_failed(&mut self, into: &mut Vec<(Owner, GrantStatus)>) {
        into.clear();
        into.append(&mut self.failed);
    }

    /// The hypercalls slot `slot`'s ops went in this pass.
    pub fn calls(&self, slot: u32) -> u32 {
        self.calls.get(slot as usize).copied().unwrap_or(0)
    }
}
