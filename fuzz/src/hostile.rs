//! The hostile frontend: a [`RawFront`] that writes ring slots and indices raw, grants, re-grants
//! and revokes its pages in any order (also in the middle of a backend pass: [`Revocation`]),
//! and remembers enough to judge the backend's answers.
//!
//! Every data page is a sentinel (a known pattern, or the data the guest itself wrote) unless a
//! live writable or accept-transfer grant to the backend names it. Every image written into a
//! ring slot is kept until that slot's response is read, so a response's `id` can be checked
//! against what the backend could have read there, however the slot was rewritten.

use hypervisor::{DomId, GrantRef, PAGE_SIZE, Pfn};
use netback::{FrontendOffloads, RxMode, VifId};
use netif_ring::netif::{ExtraInfo, RxRequest, TxRequest};
use netif_ring::raw;
pub use testkit::GrantKind;
use testkit::{Guest, RawFront};
use xen_model::{DomainHandle, Hypervisor};

use crate::Input;
use crate::world::{HOSTILE_PAGES, MAC_H, RING_SIZE, pattern};

/// One grant the guest made.
#[derive(Debug, Clone, Copy)]
pub struct Grant {
    /// Its reference.
    pub gref: GrantRef,
    /// The data page (index into `Hostile::pages`).
    pub page: usize,
    /// Its kind.
    pub kind: GrantKind,
    /// Not yet revoked.
    pub live: bool,
}

/// The hostile guest.
#[derive(Debug)]
pub struct Hostile {
    /// The guest and its rings (only their memory is used: every ring write is raw).
    pub front: RawFront,
    /// The guest's own tx producer (free-running).
    pub tx_prod: u32,
    /// The guest's own rx producer.
    pub rx_prod: u32,
    /// Data pages.
    pub pages: Vec<Pfn>,
    /// Each data page's expected content, `None` while the backend may write it.
    expected: Vec<Option<Vec<u8>>>,
    generation: u32,
    /// Every grant made, in order.
    pub grants: Vec<Grant>,
    /// Per tx ring slot: every 12-byte image written since its last response was read.
    pub tx_images: Vec<Vec<TxRequest>>,
    /// Per rx ring slot: likewise, 8-byte images.
    pub rx_images: Vec<Vec<RxRequest>>,
}

impl Hostile {
    /// A guest with rings granted to `backend`; `foreign` is the domain its foreign grants
    /// name. Every data page starts as a sentinel.
    pub fn new(xen: &Hypervisor, backend: DomId, foreign: DomId, mode: RxMode) -> Hostile {
        let front = RawFront::new(
            xen,
            backend,
            Guest {
                mac: MAC_H,
                mode,
                pages: HOSTILE_PAGES,
                // Everything Linux's netfront takes, so the checksum and GSO paths of rx are
                // fuzzed too (a GSO extra slot consumes a request of its own).
                offload: FrontendOffloads::ALL,
                foreign: Some(foreign),
            },
        );
        let dom = &front.dom;
        let pages: Vec<Pfn> = (2..HOSTILE_PAGES)
            .map(|_| dom.alloc_page().expect("data page"))
            .collect();
        let expected = pages
            .iter()
            .map(|&pfn| {
                let p = pattern(dom.domid(), pfn, 0);
                dom.write(pfn, 0, &p).expect("write");
                Some(p)
            })
            .collect();
        let mut tx_images = vec![Vec::new(); RING_SIZE as usize];
        let mut rx_images = vec![Vec::new(); RING_SIZE as usize];
        // A fresh ring page is zero: that is what the backend reads in a slot never written.
        for s in 0..RING_SIZE as usize {
            tx_images[s].push(TxRequest::default());
            rx_images[s].push(RxRequest::default());
        }
        Hostile {
            front,
            tx_prod: 0,
            rx_prod: 0,
            pages,
            expected,
            generation: 0,
            grants: Vec::new(),
            tx_images,
            rx_images,
        }
    }

    /// Its vif's id.
    pub fn id(&self) -> VifId {
        self.front.id()
    }

    /// Grants data page `page` (modulo the count) as `kind`; returns the grant's index.
    pub fn grant(&mut self, page: usize, kind: GrantKind) -> Option<usize> {
        let page = page % self.pages.len();
        let gref = self.front.grant(self.pages[page], kind).ok()?;
        if kind.backend_writes() {
            self.expected[page] = None;
        }
        self.grants.push(Grant {
            gref,
            page,
            kind,
            live: true,
        });
        Some(self.grants.len() - 1)
    }

    /// Revokes grant `i` (modulo the count). A page no longer writable by the backend gets a
    /// fresh pattern, which must survive to the end.
    pub fn revoke(&mut self, i: usize) {
        if self.grants.is_empty() {
            return;
        }
        let i = i % self.grants.len();
        let g = self.grants[i];
        if !g.live {
            return;
        }
        let ok = self.front.revoke(g.gref, g.kind).is_ok();
        assert!(
            ok,
            "revoking {g:?} failed: the backend holds a grant between passes"
        );
        self.grants[i].live = false;
        self.refresh(g.page);
    }

    /// Revokes grant `i` (modulo the count) if the hypervisor lets it (a grant the backend has
    /// mapped as a ring is in use); returns whether it did.
    pub fn try_revoke(&mut self, i: usize) -> bool {
        if self.grants.is_empty() {
            return false;
        }
        let i = i % self.grants.len();
        let g = self.grants[i];
        let ok = g.live && self.front.revoke(g.gref, g.kind).is_ok();
        if ok {
            self.grants[i].live = false;
            self.refresh(g.page);
        }
        ok
    }

    /// A revocation of grant `i` (modulo the count) to make during the next pass, with the
    /// pattern to lay if the page then has no writable grant left. `None` if the grant is
    /// already revoked.
    pub fn mid_pass_revoke(&mut self, i: usize) -> Option<Revocation> {
        if self.grants.is_empty() {
            return None;
        }
        let i = i % self.grants.len();
        let g = self.grants[i];
        if !g.live {
            return None;
        }
        let others = self
            .grants
            .iter()
            .enumerate()
            .any(|(j, o)| j != i && o.live && o.page == g.page && o.kind.backend_writes());
        let refill = (!others).then(|| {
            self.generation += 1;
            let pfn = self.pages[g.page];
            (pfn, pattern(self.front.dom.domid(), pfn, self.generation))
        });
        Some(Revocation {
            guest: self.front.dom.clone(),
            grant: i,
            gref: g.gref,
            kind: g.kind,
            refill,
            ok: false,
        })
    }

    /// Takes note of revocations made during a pass.
    pub fn reconcile(&mut self, done: &[Revocation]) {
        for m in done.iter().filter(|m| m.ok) {
            let page = self.grants[m.grant].page;
            self.grants[m.grant].live = false;
            // The page may have gained or lost another writable grant since the revocation was
            // scheduled: the refill counts only if none is left.
            let writable = self
                .grants
                .iter()
                .any(|g| g.live && g.page == page && g.kind.backend_writes());
            match &m.refill {
                Some((_, p)) if !writable => self.expected[page] = Some(p.clone()),
                _ => self.refresh(page),
            }
        }
    }

    /// Re-lays the sentinel of `page` if no live grant lets the backend write it.
    fn refresh(&mut self, page: usize) {
        let writable = self
            .grants
            .iter()
            .any(|g| g.live && g.page == page && g.kind.backend_writes());
        if writable || self.expected[page].is_some() {
            return;
        }
        self.generation += 1;
        let pfn = self.pages[page];
        let p = pattern(self.front.dom.domid(), pfn, self.generation);
        self.front.dom.write(pfn, 0, &p).expect("own page");
        self.expected[page] = Some(p);
    }

    /// Writes `data` at `offset` of data page `page` (the guest's own writes are expected).
    pub fn write_page(&mut self, page: usize, offset: usize, data: &[u8]) {
        let page = page % self.pages.len();
        let offset = offset % PAGE_SIZE;
        let data = &data[..data.len().min(PAGE_SIZE - offset)];
        if self.front.dom.write(self.pages[page], offset, data).is_ok()
            && let Some(e) = &mut self.expected[page]
        {
            e[offset..offset + data.len()].copy_from_slice(data);
        }
    }

    /// The page a live grant `gref` of `kind` names, if any.
    pub fn live_page(&self, gref: u32, kind: GrantKind) -> Option<Pfn> {
        self.grants
            .iter()
            .find(|g| g.live && g.gref.0 == gref && g.kind == kind)
            .map(|g| self.pages[g.page])
    }

    /// A grant reference chosen by the input: one the guest made (live or revoked), a ring's,
    /// one beyond the table, or raw.
    pub fn pick_gref(&self, input: &mut Input<'_>) -> u32 {
        match input.u8() {
            0xff => input.u32(),
            0xfe => 2048 + u32::from(input.u16()),
            0xfd => self.front.keys.queues[0].tx_ring_ref.0,
            0xfc => self.front.keys.queues[0].rx_ring_ref.0,
            s if !self.grants.is_empty() => self.grants[s as usize % self.grants.len()].gref.0,
            _ => u32::from(input.u16()),
        }
    }

    /// Op `GRANT` of the netback targets (`page, kind`): grants a data page as the input says.
    pub fn grant_from(&mut self, input: &mut Input<'_>) {
        let page = input.u8() as usize;
        let kind = GrantKind::ALL[input.below(4)];
        self.grant(page, kind);
    }

    /// Panics if a page the backend may not write changed.
    pub fn check_sentinels(&self) {
        let mut buf = vec![0u8; PAGE_SIZE];
        for (i, e) in self.expected.iter().enumerate() {
            let Some(e) = e else { continue };
            self.front
                .dom
                .read(self.pages[i], 0, &mut buf)
                .expect("own page");
            if buf != *e {
                let at = buf.iter().zip(e).position(|(a, b)| a != b).unwrap_or(0);
                let live: Vec<&Grant> = self.grants.iter().filter(|g| g.page == i).collect();
                panic!(
                    "hostile guest page {i} ({:?}) changed at byte {at} though the backend may \
                     not write it; its grants: {live:?}",
                    self.pages[i]
                );
            }
        }
    }

    // --- tx ring ---

    /// Writes `req` into the tx slot for index `idx`.
    pub fn write_tx(&mut self, idx: u32, req: TxRequest) {
        self.front.write_tx_at(idx, req);
        self.tx_images[(idx % RING_SIZE) as usize].push(req);
    }

    /// Writes an extra-info slot for index `idx` (its first 8 bytes; the rest stay).
    pub fn write_tx_extra(&mut self, idx: u32, extra: ExtraInfo) {
        self.front.write_tx_at(idx, extra);
        let image: TxRequest = self.front.read_tx_at(idx);
        self.tx_images[(idx % RING_SIZE) as usize].push(image);
    }

    /// Puts a request at the guest's producer.
    pub fn put_tx(&mut self, req: TxRequest) {
        self.write_tx(self.tx_prod, req);
        self.tx_prod = self.tx_prod.wrapping_add(1);
    }

    /// Puts an extra-info slot at the guest's producer.
    pub fn put_tx_extra(&mut self, extra: ExtraInfo) {
        self.write_tx_extra(self.tx_prod, extra);
        self.tx_prod = self.tx_prod.wrapping_add(1);
    }

    /// Publishes `v` as `req_prod` of the tx ring.
    pub fn set_tx_req_prod(&mut self, v: u32) {
        self.front.set_tx_req_prod(v);
    }

    /// The shared indices of the tx ring.
    pub fn tx_indices(&self) -> raw::Indices {
        self.front.tx_indices()
    }

    // --- rx ring ---

    /// Writes `req` into the rx slot for index `idx`.
    pub fn write_rx(&mut self, idx: u32, req: RxRequest) {
        self.front.write_rx_at(idx, req);
        self.rx_images[(idx % RING_SIZE) as usize].push(req);
    }

    /// Puts an rx request at the guest's producer.
    pub fn put_rx(&mut self, req: RxRequest) {
        self.write_rx(self.rx_prod, req);
        self.rx_prod = self.rx_prod.wrapping_add(1);
    }

    /// Publishes `v` as `req_prod` of the rx ring.
    pub fn set_rx_req_prod(&mut self, v: u32) {
        self.front.set_rx_req_prod(v);
    }

    /// The shared indices of the rx ring.
    pub fn rx_indices(&self) -> raw::Indices {
        self.front.rx_indices()
    }

    /// Signals the backend.
    pub fn notify(&self) {
        self.front.notify();
    }
}

/// A revocation the guest makes during a pass, before one of the backend's grant hypercalls
/// (scheduled on a `testkit::MidPass`). A revoked page that the backend may no longer write
/// gets its fresh sentinel pattern at once, inside the pass, so a later write through the
/// revoked grant shows at the end.
#[derive(Debug, Clone)]
pub struct Revocation {
    /// The guest.
    pub guest: DomainHandle,
    /// Index of the grant in the guest's list.
    pub grant: usize,
    /// The grant.
    pub gref: GrantRef,
    /// Its kind.
    pub kind: GrantKind,
    /// The page and the pattern to lay once revoked, if the backend may then no longer write
    /// the page.
    pub refill: Option<(Pfn, Vec<u8>)>,
    /// Set once done: whether the revocation succeeded.
    pub ok: bool,
}

impl Revocation {
    /// Revokes the grant (on the backend's thread, inside the pass) and lays the refill.
    pub fn run(&mut self) {
        self.ok = self.kind.end(&self.guest, self.gref).is_ok();
        if self.ok
            && let Some((pfn, p)) = &self.refill
        {
            self.guest
                .write(*pfn, 0, p)
                .expect("the guest writes its own revoked page");
        }
    }
}

/// Responses a ring has gained: checks the producer moved forward by at most what the guest
/// published, and hands the new indices to `each`.
#[derive(Debug, Clone, Copy)]
pub struct Published {
    /// The response producer last seen.
    pub rsp_seen: u32,
    /// The furthest valid `req_prod` the backend was shown at a pass (never behind
    /// `rsp_seen`).
    pub hi: u32,
}

impl Published {
    /// Before a pass: the backend will see `req_prod`. Returns whether that value is valid
    /// (at most a ring ahead of the responses), as the backend must judge it.
    pub fn before_pass(&mut self, req_prod: u32) -> bool {
        let d = req_prod.wrapping_sub(self.rsp_seen);
        if d > RING_SIZE {
            return false;
        }
        if d > self.hi.wrapping_sub(self.rsp_seen) {
            self.hi = req_prod;
        }
        true
    }

    /// After a pass: the backend published `rsp_prod`. Returns the new responses' indices.
    pub fn after_pass(&mut self, rsp_prod: u32) -> impl Iterator<Item = u32> + use<> {
        let new = rsp_prod.wrapping_sub(self.rsp_seen);
        let allowed = self.hi.wrapping_sub(self.rsp_seen);
        assert!(
            new <= allowed,
            "rsp_prod {rsp_prod} is {new} past {} but only {allowed} requests were ever \
             published (a response for an unpushed request, or rsp_prod moved back)",
            self.rsp_seen
        );
        let start = self.rsp_seen;
        self.rsp_seen = rsp_prod;
        (0..new).map(move |k| start.wrapping_add(k))
    }
}
