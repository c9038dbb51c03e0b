//! A small binary encoding for job events and snapshots: little-endian
//! fixed integers, zigzag varints and length-prefixed byte strings. Decoding
//! never panics on bad input; it returns `None`.

use bytes::Bytes;

#[derive(Debug, Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub fn u64(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    pub fn i64(&mut self, v: i64) {
        self.u64(((v << 1) ^ (v >> 63)) as u64);
    }

    pub fn bytes(&mut self, v: &[u8]) {
        self.u64(v.len() as u64);
        self.buf.extend_from_slice(v);
    }

    pub fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }

    pub fn opt_str(&mut self, v: Option<&str>) {
        match v {
            None => self.u8(0),
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
        }
    }

    pub fn opt_i64(&mut self, v: Option<i64>) {
        match v {
            None => self.u8(0),
            Some(x) => {
                self.u8(1);
                self.i64(x);
            }
        }
    }

    pub fn opt_bytes(&mut self, v: Option<&[u8]>) {
        match v {
            None => self.u8(0),
            Some(b) => {
                self.u8(1);
                self.bytes(b);
            }
        }
    }
}

/// Reads from a `Bytes`, handing out zero-copy slices for byte strings.
#[derive(Debug)]
pub struct Reader {
    bytes: Bytes,
    at: usize,
}

impl Reader {
    pub fn new(bytes: Bytes) -> Self {
        Reader { bytes, at: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.at >= self.bytes.len()
    }

    pub fn u8(&mut self) -> Option<u8> {
        let v = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(v)
    }

    pub fn u64(&mut self) -> Option<u64> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    pub fn u32(&mut self) -> Option<u32> {
        u32::try_from(self.u64()?).ok()
    }

    pub fn i64(&mut self) -> Option<i64> {
        let z = self.u64()?;
        Some(((z >> 1) as i64) ^ -((z & 1) as i64))
    }

    pub fn i32(&mut self) -> Option<i32> {
        i32::try_from(self.i64()?).ok()
    }

    pub fn bytes(&mut self) -> Option<Bytes> {
        let len = usize::try_from(self.u64()?).ok()?;
        let end = self.at.checked_add(len).filter(|&end| end <= self.bytes.len())?;
        let v = self.bytes.slice(self.at..end);
        self.at = end;
        Some(v)
    }

    pub fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }

    pub fn opt_string(&mut self) -> Option<Option<String>> {
        match self.u8()? {
            0 => Some(None),
            1 => Some(Some(self.string()?)),
            _ => None,
        }
    }

    pub fn opt_i64(&mut self) -> Option<Option<i64>> {
        match self.u8()? {
            0 => Some(None),
            1 => Some(Some(self.i64()?)),
            _ => None,
        }
    }

    pub fn opt_bytes(&mut self) -> Option<Option<Bytes>> {
        match self.u8()? {
            0 => Some(None),
            1 => Some(Some(self.bytes()?)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let mut w = Writer::default();
        w.u64(300);
        w.i64(-5);
        w.str("queue");
        w.opt_i64(Some(i64::MIN));
        w.opt_bytes(None);
        let bytes = Bytes::from(w.buf);
        let mut r = Reader::new(bytes.clone());
        assert_eq!(r.u64(), Some(300));
        assert_eq!(r.i64(), Some(-5));
        assert_eq!(r.string().as_deref(), Some("queue"));
        assert_eq!(r.opt_i64(), Some(Some(i64::MIN)));
        assert_eq!(r.opt_bytes(), Some(None));
        assert!(r.is_empty());
        for cut in 0..bytes.len() {
            let mut r = Reader::new(bytes.slice(..cut));
            let ok = (|| {
                r.u64()?;
                r.i64()?;
                r.string()?;
                r.opt_i64()?;
                r.opt_bytes()
            })();
            assert!(ok.is_none(), "cut at {cut} decoded");
        }
    }
}
