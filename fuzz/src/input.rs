//! The input decoder every target uses, and the encoder the seed corpora are written with.

/// A cursor over the fuzzer's bytes. Reads past the end yield zeros, so decoding never fails and
/// a truncated input is still a program; [`Input::is_empty`] ends a target's op loop.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    /// A cursor at the start of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    /// Whether every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    /// The next byte (0 past the end).
    pub fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    /// A little-endian u16.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// A little-endian u32.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// A bool from one byte's low bit.
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 != 0
    }

    /// A number below `n` (`n` at most 256) from one byte.
    pub fn below(&mut self, n: usize) -> usize {
        debug_assert!(n > 0 && n <= 256);
        self.u8() as usize % n
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        let end = self.pos.saturating_add(n).min(self.data.len());
        self.pos = self.pos.saturating_add(n);
        &self.data[start..end]
    }

    /// Exactly `N` bytes, zero-padded at the end of the input.
    pub fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let b = self.bytes(N);
        out[..b.len()].copy_from_slice(b);
        out
    }

    /// A target's op loop: calls `op` (which decodes and runs one op) until every byte has been
    /// read or it ran `limit` times.
    pub fn play(&mut self, limit: usize, mut op: impl FnMut(&mut Self)) {
        let mut ops = 0;
        while !self.is_empty() && ops < limit {
            ops += 1;
            op(self);
        }
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        self.pos = self.data.len();
        &self.data[start..]
    }
}

/// A target played as a sequence of operations decoded from the input (the stateful targets:
/// a machine set up once, then up to [`Scenario::OPS`] operations, then the end checks).
pub trait Scenario: Sized {
    /// The most operations one input runs (bounds a fuzzer execution).
    const OPS: usize;
    /// Sets the scene up, reading its choices (if any) from the input.
    fn start(input: &mut Input<'_>) -> Self;
    /// Decodes and runs one operation.
    fn op(&mut self, input: &mut Input<'_>);
    /// Settles and checks the invariants that hold at the end.
    fn finish(self);
}

/// Plays `data` through `S`: start, at most `S::OPS` operations, the end checks.
pub fn run<S: Scenario>(data: &[u8]) {
    replay_at_most::<S>(data, S::OPS).finish();
}

/// Plays every operation of `data` (no limit) and hands the scene back without its end
/// checks: for unit tests that look inside.
#[cfg(test)]
pub fn replay<S: Scenario>(data: &[u8]) -> S {
    replay_at_most(data, usize::MAX)
}

fn replay_at_most<S: Scenario>(data: &[u8], limit: usize) -> S {
    let mut input = Input::new(data);
    let mut s = S::start(&mut input);
    input.play(limit, |input| s.op(input));
    s
}

/// Writes inputs in [`Input`]'s encoding (for seeds and regression inputs).
#[derive(Debug, Clone, Default)]
pub struct Enc(pub Vec<u8>);

impl Enc {
    /// An empty input.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a byte.
    pub fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }

    /// Appends a little-endian u16.
    pub fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends a little-endian u32.
    pub fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends bytes.
    pub fn bytes(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }

    /// The encoded input.
    pub fn done(self) -> Vec<u8> {
        self.0
    }
}
