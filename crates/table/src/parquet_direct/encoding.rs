//! The encodings page bodies are made of: ULEB128 and zigzag varints, bit packing, the
//! bit-packed runs of the RLE/bit-packing hybrid, and `DELTA_BINARY_PACKED`.

/// Bits needed for `max`.
pub(super) fn bit_width(max: u64) -> u8 {
    (64 - max.leading_zeros()) as u8
}

pub(super) fn uleb(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(super) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Packs `values` at `width` bits each, least significant bit first.
fn pack_bits(out: &mut Vec<u8>, values: &[u64], width: u8) {
    if width == 0 {
        return;
    }
    let mut acc: u128 = 0;
    let mut bits = 0u32;
    for &v in values {
        acc |= (v as u128) << bits;
        bits += width as u32;
        while bits >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            bits -= 8;
        }
    }
    if bits > 0 {
        out.push(acc as u8);
    }
}

/// One bit-packed run of the RLE/bit-packing hybrid: groups of 8 values (the last padded with
/// zeros; the page's value count says where the values end).
pub(super) fn bit_packed_run(out: &mut Vec<u8>, values: &[u64], width: u8) {
    let groups = values.len().div_ceil(8);
    uleb(out, ((groups as u64) << 1) | 1);
    let start = out.len();
    pack_bits(out, values, width);
    out.resize(start + groups * width as usize, 0);
}

/// `DELTA_BINARY_PACKED`: blocks of 128 deltas in 4 miniblocks of 32.
pub(super) fn delta_binary_packed(out: &mut Vec<u8>, values: &[i64]) {
    const BLOCK: usize = 128;
    const MINIBLOCKS: usize = 4;
    const MINI: usize = BLOCK / MINIBLOCKS;
    uleb(out, BLOCK as u64);
    uleb(out, MINIBLOCKS as u64);
    uleb(out, values.len() as u64);
    uleb(out, zigzag(values.first().copied().unwrap_or(0)));
    if values.len() < 2 {
        return;
    }
    let mut deltas = [0i64; BLOCK];
    let mut packed = [0u64; MINI];
    let mut next = 1;
    while next < values.len() {
        let n = (values.len() - next).min(BLOCK);
        for (i, d) in deltas[..n].iter_mut().enumerate() {
            *d = values[next + i].wrapping_sub(values[next + i - 1]);
        }
        next += n;
        let deltas = &deltas[..n];
        let min = deltas.iter().copied().min().unwrap_or(0);
        uleb(out, zigzag(min));
        let widths_at = out.len();
        out.resize(widths_at + MINIBLOCKS, 0);
        for (m, mini) in deltas.chunks(MINI).enumerate() {
            let mut max = 0u64;
            for (p, &d) in packed.iter_mut().zip(mini) {
                *p = d.wrapping_sub(min) as u64;
                max |= *p;
            }
            let width = bit_width(max);
            out[widths_at + m] = width;
            // A partial last miniblock is padded to its full size.
            packed[mini.len()..].fill(0);
            pack_bits(out, &packed, width);
        }
    }
}
