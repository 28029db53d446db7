//! Canonical, bounded binary encoding.
//!
//! The signed part of every receipt (and later every transaction) is encoded with this
//! codec: fixed-width little-endian integers, length-prefixed byte strings, no optional
//! whitespace or field order freedom. The decoder takes explicit limits and rejects
//! trailing bytes, so an adversarial input can neither allocate without bound nor have
//! two encodings.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("input ended early: needed {needed} more bytes")]
    UnexpectedEnd { needed: usize },
    #[error("length {len} exceeds the limit {limit}")]
    TooLong { len: usize, limit: usize },
    #[error("{0} trailing bytes after the value")]
    Trailing(usize),
    #[error("invalid value: {0}")]
    Invalid(&'static str),
}

/// Appends canonical fields to a byte buffer.
#[derive(Default, Debug, Clone)]
pub struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// An f32 by its exact bit pattern (canonical: no text formatting involved).
    pub fn f32(&mut self, v: f32) -> &mut Self {
        self.u32(v.to_bits())
    }
    pub fn fixed(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }
    /// Length-prefixed (u32) byte string.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        let len = u32::try_from(v.len()).expect("field longer than 4 GiB");
        self.u32(len);
        self.buf.extend_from_slice(v);
        self
    }
    pub fn str(&mut self, v: &str) -> &mut Self {
        self.bytes(v.as_bytes())
    }
    pub fn u32s(&mut self, v: &[u32]) -> &mut Self {
        let len = u32::try_from(v.len()).expect("too many items");
        self.u32(len);
        for x in v {
            self.u32(*x);
        }
        self
    }
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }
}

/// Reads canonical fields back, with a limit on every variable-length field.
#[derive(Debug)]
pub struct Decoder<'a> {
    buf: &'a [u8],
}

impl<'a> Decoder<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::UnexpectedEnd {
                needed: n - self.buf.len(),
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    pub fn f32(&mut self) -> Result<f32, DecodeError> {
        Ok(f32::from_bits(self.u32()?))
    }
    pub fn fixed<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    pub fn bytes(&mut self, limit: usize) -> Result<&'a [u8], DecodeError> {
        let len = self.u32()? as usize;
        if len > limit {
            return Err(DecodeError::TooLong { len, limit });
        }
        self.take(len)
    }
    pub fn str(&mut self, limit: usize) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.bytes(limit)?).map_err(|_| DecodeError::Invalid("utf-8"))
    }
    pub fn u32s(&mut self, limit: usize) -> Result<Vec<u32>, DecodeError> {
        let len = self.u32()? as usize;
        if len > limit {
            return Err(DecodeError::TooLong { len, limit });
        }
        (0..len).map(|_| self.u32()).collect()
    }
    /// Fails if anything is left: a value has exactly one encoding.
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Trailing(self.buf.len()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut e = Encoder::new();
        e.u8(7)
            .u32(9)
            .u64(u64::MAX)
            .f32(-0.5)
            .str("héllo")
            .u32s(&[1, 2, 3]);
        let bytes = e.finish();
        let mut d = Decoder::new(&bytes);
        assert_eq!(d.u8().unwrap(), 7);
        assert_eq!(d.u32().unwrap(), 9);
        assert_eq!(d.u64().unwrap(), u64::MAX);
        assert_eq!(d.f32().unwrap(), -0.5);
        assert_eq!(d.str(16).unwrap(), "héllo");
        assert_eq!(d.u32s(3).unwrap(), vec![1, 2, 3]);
        d.finish().unwrap();
    }

    #[test]
    fn limits_truncation_and_trailing_bytes_are_errors() {
        let mut e = Encoder::new();
        e.str("abcdef");
        let bytes = e.finish();
        assert_eq!(
            Decoder::new(&bytes).str(3),
            Err(DecodeError::TooLong { len: 6, limit: 3 })
        );
        assert!(matches!(
            Decoder::new(&bytes[..5]).str(10),
            Err(DecodeError::UnexpectedEnd { .. })
        ));
        let mut d = Decoder::new(&bytes);
        d.u8().unwrap();
        assert_eq!(d.finish(), Err(DecodeError::Trailing(9)));
        // A huge claimed length never allocates.
        let huge = u32::MAX.to_le_bytes();
        assert!(Decoder::new(&huge).u32s(1024).is_err());
    }
}
