//! Incremental Internet checksum updates (RFC 1624, eqn. 3) for header rewrites, and
//! the partial form of TCP/UDP checksums that local senders leave to the device.

/// The checksum `check` after a 16-bit word of the covered data changed `old` → `new`.
/// All values are in network byte order, as they sit in the packet.
#[inline(always)]
pub fn replace16(check: [u8; 2], old: [u8; 2], new: [u8; 2]) -> [u8; 2] {
    let mut sum = u32::from(!u16::from_be_bytes(check))
        + u32::from(!u16::from_be_bytes(old))
        + u32::from(u16::from_be_bytes(new));
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    (!(sum as u16)).to_be_bytes()
}

/// The checksum `check` after a 32-bit field (an IPv4 address) changed `old` → `new`.
#[inline(always)]
pub fn replace32(check: [u8; 2], old: [u8; 4], new: [u8; 4]) -> [u8; 2] {
    let check = replace16(check, [old[0], old[1]], [new[0], new[1]]);
    replace16(check, [old[2], old[3]], [new[2], new[3]])
}

/// A 32-bit one's-complement sum folded to 16 bits (not inverted).
#[inline(always)]
pub fn fold(sum: u32) -> u16 {
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// The sum of the TCP/UDP pseudo-header (addresses, protocol, L4 length), big-endian
/// words as in [`replace16`].
#[inline(always)]
pub fn pseudo_header(src: [u8; 4], dst: [u8; 4], protocol: u8, l4_len: u16) -> u32 {
    u32::from(u16::from_be_bytes([src[0], src[1]]))
        + u32::from(u16::from_be_bytes([src[2], src[3]]))
        + u32::from(u16::from_be_bytes([dst[0], dst[1]]))
        + u32::from(u16::from_be_bytes([dst[2], dst[3]]))
        + u32::from(protocol)
        + u32::from(l4_len)
}

/// The value a sender's kernel leaves in a TCP/UDP checksum field it hands to the
/// device to finish (CHECKSUM_PARTIAL): the folded pseudo-header sum, not inverted.
/// Whoever finishes it sums the segment from the L4 header on, this field included,
/// and stores the complement.
#[inline(always)]
pub fn partial_form(pseudo: u32) -> [u8; 2] {
    fold(pseudo).to_be_bytes()
}

#[cfg(all(test, not(target_arch = "bpf")))]
mod tests {
    use super::*;

    fn full(data: &[u8]) -> [u8; 2] {
        let mut sum: u32 = data
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        (!(sum as u16)).to_be_bytes()
    }

    /// Deterministic pseudo-random bytes (xorshift) so the test needs no RNG crate.
    fn bytes(seed: &mut u64, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                *seed as u8
            })
            .collect()
    }

    #[test]
    fn incremental_updates_equal_a_full_recompute() {
        let mut seed = 0x9e37_79b9_7f4a_7c15;
        for round in 0..2000 {
            let mut data = bytes(&mut seed, 20);
            // Include the all-ones/all-zeros corner words now and then.
            if round % 7 == 0 {
                data[4..8].copy_from_slice(&[0xff; 4]);
            }
            data[10..12].fill(0);
            let check = full(&data);
            let mut changed = data.clone();
            let new = bytes(&mut seed, 6);
            changed[4..8].copy_from_slice(&new[..4]);
            changed[14..16].copy_from_slice(&new[4..6]);
            let old32: [u8; 4] = data[4..8].try_into().unwrap();
            let old16: [u8; 2] = data[14..16].try_into().unwrap();
            let inc = replace16(
                replace32(check, old32, new[..4].try_into().unwrap()),
                old16,
                new[4..6].try_into().unwrap(),
            );
            let expected = full(&changed);
            // 0x0000 and 0xffff are the same value in one's complement.
            let same = inc == expected
                || (u16::from_be_bytes(inc) | u16::from_be_bytes(expected)) == 0xffff
                    && (inc == [0, 0] || expected == [0, 0]);
            assert!(same, "round {round}: {inc:?} != {expected:?}");
        }
    }
}
