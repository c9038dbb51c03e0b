//! Zigzag variable-length integers, as Kafka's record format v2 uses them.

/// Bytes needed to encode `value` as a zigzag varlong.
pub fn len_i64(value: i64) -> usize {
    let zigzag = zigzag_i64(value);
    // 7 bits a byte; at least one byte.
    let bits = 64 - (zigzag | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Writes `value` at the start of `out` and returns the bytes written.
/// `out` must hold at least [`len_i64`] bytes.
#[inline]
pub fn put_i64(out: &mut [u8], value: i64) -> usize {
    let mut zigzag = zigzag_i64(value);
    let mut written = 0;
    while zigzag >= 0x80 {
        out[written] = (zigzag as u8) | 0x80;
        zigzag >>= 7;
        written += 1;
    }
    out[written] = zigzag as u8;
    written + 1
}

/// Reads a zigzag varlong from the start of `input`: the value and the
/// bytes it took, or `None` if it is truncated or longer than ten bytes.
#[inline]
pub fn get_i64(input: &[u8]) -> Option<(i64, usize)> {
    let mut zigzag: u64 = 0;
    for (i, &byte) in input.iter().enumerate().take(10) {
        zigzag |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let value = ((zigzag >> 1) as i64) ^ -((zigzag & 1) as i64);
            return Some((value, i + 1));
        }
    }
    None
}

/// Reads a zigzag varint that must fit an `i32`.
#[inline]
pub fn get_i32(input: &[u8]) -> Option<(i32, usize)> {
    let (value, used) = get_i64(input)?;
    let value = i32::try_from(value).ok()?;
    (used <= 5).then_some((value, used))
}

fn zigzag_i64(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_encodings() {
        // Values from the protobuf/Kafka zigzag tables.
        let cases: [(i64, &[u8]); 5] = [
            (0, &[0x00]),
            (-1, &[0x01]),
            (1, &[0x02]),
            (-64, &[0x7f]),
            (64, &[0x80, 0x01]),
        ];
        for (value, bytes) in cases {
            let mut buf = [0u8; 10];
            let n = put_i64(&mut buf, value);
            assert_eq!(&buf[..n], bytes, "{value}");
            assert_eq!(len_i64(value), n);
            assert_eq!(get_i64(bytes), Some((value, n)));
        }
    }

    #[test]
    fn truncated_and_overlong_inputs_are_rejected() {
        assert_eq!(get_i64(&[0x80]), None);
        assert_eq!(get_i64(&[0xff; 11]), None);
        assert_eq!(get_i32(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x01]), None);
    }

    proptest! {
        #[test]
        fn round_trip(value in any::<i64>()) {
            let mut buf = [0u8; 10];
            let n = put_i64(&mut buf, value);
            prop_assert_eq!(n, len_i64(value));
            prop_assert_eq!(get_i64(&buf[..n]), Some((value, n)));
        }
    }
}
