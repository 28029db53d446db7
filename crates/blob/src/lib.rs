//! Verified transfer of large files (model weights) by their BLAKE3 hash.
//!
//! A file's BLAKE3 hash is the root of a binary tree over its 1 KiB chunks. Cut the file
//! into groups of [`GROUP_LEN`] bytes (a power of two of chunks): every group is a whole
//! subtree, so its chaining value can be computed on its own, and the chaining values of
//! all groups determine the root. The [`Outboard`] is that list of group chaining values
//! (32 bytes per 256 KiB, 0.012 % of the file). A receiver who knows only the file's hash:
//!
//! 1. fetches the outboard from any peer and checks that it merges to the hash
//!    ([`Outboard::decode`]); a wrong outboard cannot pass, so it needs no trust;
//! 2. fetches groups from any peers, in any order, and checks each one against its
//!    chaining value ([`Outboard::check_group`]) before writing it: a corrupted or
//!    substituted group is caught at once, attributed to the peer that sent it, and
//!    fetched again elsewhere;
//! 3. after an interruption, re-checks the groups already in its partial file
//!    ([`verified_groups`]) and fetches only the rest: what is on disk is trusted only
//!    after it hashes right, so a torn write or a crash costs a refetch, never a bad file.
//!
//! When every group checked, the file's hash is the registered one by construction.
//! Pure: no sockets, no clocks; the transfer itself lives in the node.

use blake3::hazmat::{
    left_subtree_len, merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode,
};
use std::io::Read;
use std::ops::Range;

/// Bytes per verified group: 256 BLAKE3 chunks.
pub const GROUP_LEN: u64 = 256 * 1024;
const MAGIC: &[u8; 8] = b"vouchob1";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BlobError {
    #[error("outboard is malformed: {0}")]
    Malformed(String),
    #[error("outboard does not merge to the expected hash (got {got}, expected {expected})")]
    WrongRoot { got: String, expected: String },
    #[error("group {group} does not match its hash")]
    GroupMismatch { group: u64 },
    #[error("group {group} has {got} bytes, expected {expected}")]
    GroupLength { group: u64, got: u64, expected: u64 },
    #[error("group {group} is out of range ({groups} groups)")]
    NoSuchGroup { group: u64, groups: u64 },
}

/// Number of groups a file of `len` bytes has (an empty file has one, empty, group).
pub fn group_count(len: u64) -> u64 {
    len.div_ceil(GROUP_LEN).max(1)
}

/// Byte range of group `i` in a file of `len` bytes.
pub fn group_range(len: u64, i: u64) -> Range<u64> {
    let start = (i * GROUP_LEN).min(len);
    start..(start + GROUP_LEN).min(len)
}

/// The chaining values of every group of one file, and its length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outboard {
    len: u64,
    /// One per group; for a one-group file, the file's hash itself.
    cvs: Vec<ChainingValue>,
}

fn group_cv(len: u64, i: u64, data: &[u8]) -> ChainingValue {
    if group_count(len) == 1 {
        return *blake3::hash(data).as_bytes();
    }
    let mut h = blake3::Hasher::new();
    h.set_input_offset(i * GROUP_LEN);
    h.update(data);
    h.finalize_non_root()
}

/// Merges the chaining values of the groups covering `len` bytes into their parent's.
fn subtree(cvs: &[ChainingValue], len: u64) -> ChainingValue {
    if cvs.len() == 1 {
        return cvs[0];
    }
    let left = left_subtree_len(len);
    let split = (left / GROUP_LEN) as usize;
    merge_subtrees_non_root(
        &subtree(&cvs[..split], left),
        &subtree(&cvs[split..], len - left),
        Mode::Hash,
    )
}

impl Outboard {
    /// The outboard of `data`.
    pub fn of(data: &[u8]) -> Outboard {
        let len = data.len() as u64;
        let cvs = (0..group_count(len))
            .map(|i| {
                let r = group_range(len, i);
                group_cv(len, i, &data[r.start as usize..r.end as usize])
            })
            .collect();
        Outboard { len, cvs }
    }

    /// The outboard of `len` bytes read from `r` (a file, without holding it in memory).
    pub fn read(mut r: impl Read, len: u64) -> std::io::Result<Outboard> {
        let mut buf = vec![0u8; GROUP_LEN as usize];
        let mut cvs = Vec::with_capacity(group_count(len) as usize);
        for i in 0..group_count(len) {
            let range = group_range(len, i);
            let n = (range.end - range.start) as usize;
            r.read_exact(&mut buf[..n])?;
            cvs.push(group_cv(len, i, &buf[..n]));
        }
        Ok(Outboard { len, cvs })
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn groups(&self) -> u64 {
        self.cvs.len() as u64
    }

    /// The BLAKE3 hash of the file this outboard describes.
    pub fn root(&self) -> blake3::Hash {
        if self.cvs.len() == 1 {
            return blake3::Hash::from_bytes(self.cvs[0]);
        }
        let left = left_subtree_len(self.len);
        let split = (left / GROUP_LEN) as usize;
        merge_subtrees_root(
            &subtree(&self.cvs[..split], left),
            &subtree(&self.cvs[split..], self.len - left),
            Mode::Hash,
        )
    }

    /// Wire form: magic, length (u64 little endian), the chaining values.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + 32 * self.cvs.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.len.to_le_bytes());
        for cv in &self.cvs {
            out.extend_from_slice(cv);
        }
        out
    }

    /// Parses an outboard and accepts it only if its chaining values merge to `expected`,
    /// the file's BLAKE3 hash. The root does not hash the length: a length moved within
    /// the last group still decodes, and is exposed by the last group not verifying (no
    /// bytes of the claimed length hash to its chaining value), so check that group first.
    pub fn decode(bytes: &[u8], expected: &blake3::Hash) -> Result<Outboard, BlobError> {
        if bytes.len() < 16 || &bytes[..8] != MAGIC {
            return Err(BlobError::Malformed("missing header".into()));
        }
        let len = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
        let body = &bytes[16..];
        let groups = group_count(len);
        if body.len() as u64 != groups * 32 {
            return Err(BlobError::Malformed(format!(
                "{} bytes of hashes for {groups} groups",
                body.len()
            )));
        }
        let cvs = body
            .chunks_exact(32)
            .map(|c| c.try_into().expect("32 bytes"))
            .collect();
        let ob = Outboard { len, cvs };
        let got = ob.root();
        if &got != expected {
            return Err(BlobError::WrongRoot {
                got: got.to_hex().to_string(),
                expected: expected.to_hex().to_string(),
            });
        }
        Ok(ob)
    }

    /// Byte range of group `i`.
    pub fn range(&self, i: u64) -> Range<u64> {
        group_range(self.len, i)
    }

    /// Checks that `data` is group `i` of the file.
    pub fn check_group(&self, i: u64, data: &[u8]) -> Result<(), BlobError> {
        if i >= self.groups() {
            return Err(BlobError::NoSuchGroup {
                group: i,
                groups: self.groups(),
            });
        }
        let r = self.range(i);
        let expected = r.end - r.start;
        if data.len() as u64 != expected {
            return Err(BlobError::GroupLength {
                group: i,
                got: data.len() as u64,
                expected,
            });
        }
        if group_cv(self.len, i, data) != self.cvs[i as usize] {
            return Err(BlobError::GroupMismatch { group: i });
        }
        Ok(())
    }
}

/// Which groups of a partial file already hold the right bytes (a file shorter than the
/// blob counts as holes past its end). Reads at most one group at a time.
pub fn verified_groups(
    mut part: impl std::io::Read + std::io::Seek,
    ob: &Outboard,
) -> std::io::Result<Vec<bool>> {
    use std::io::SeekFrom;
    let have = part.seek(SeekFrom::End(0))?;
    part.seek(SeekFrom::Start(0))?;
    let mut buf = vec![0u8; GROUP_LEN as usize];
    let mut out = Vec::with_capacity(ob.groups() as usize);
    for i in 0..ob.groups() {
        let r = ob.range(i);
        if r.end > have {
            out.push(false);
            continue;
        }
        let n = (r.end - r.start) as usize;
        part.seek(SeekFrom::Start(r.start))?;
        part.read_exact(&mut buf[..n])?;
        out.push(ob.check_group(i, &buf[..n]).is_ok());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngCore, SeedableRng};

    fn bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut v = vec![0u8; n];
        rand_chacha::ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut v);
        v
    }

    const G: usize = GROUP_LEN as usize;

    fn lengths() -> Vec<usize> {
        vec![
            0,
            1,
            1024,
            1025,
            G - 1,
            G,
            G + 1,
            2 * G,
            2 * G + 1,
            3 * G - 7,
            5 * G,
            7 * G + 1024,
            8 * G,
            13 * G + 5,
        ]
    }

    #[test]
    fn outboard_root_is_the_files_blake3_hash() {
        for (k, n) in lengths().into_iter().enumerate() {
            let data = bytes(n, k as u64);
            let ob = Outboard::of(&data);
            assert_eq!(ob.root(), blake3::hash(&data), "length {n}");
            assert_eq!(ob.groups(), group_count(n as u64));
            let streamed = Outboard::read(&data[..], n as u64).unwrap();
            assert_eq!(streamed, ob);
        }
    }

    #[test]
    fn encoded_outboard_is_accepted_only_for_its_hash() {
        let data = bytes(5 * G + 3, 1);
        let ob = Outboard::of(&data);
        let wire = ob.encode();
        assert_eq!(wire.len(), 16 + 6 * 32);
        let root = blake3::hash(&data);
        assert_eq!(Outboard::decode(&wire, &root).unwrap(), ob);
        // Another file's hash.
        let other = blake3::hash(b"other");
        assert!(matches!(
            Outboard::decode(&wire, &other),
            Err(BlobError::WrongRoot { .. })
        ));
        // Any flipped bit in a chaining value is caught, and so is a length with another
        // number of groups.
        for pos in [16, 16 + 31, 16 + 3 * 32 + 7, wire.len() - 1, 10] {
            let mut bad = wire.clone();
            bad[pos] ^= 0x10;
            assert!(Outboard::decode(&bad, &root).is_err(), "flip at {pos}");
        }
        // The root does not hash the length, so a length moved within the last group
        // decodes; but then no bytes verify as that group, so the lie costs the liar the
        // transfer, never the receiver a wrong file (the node checks the last group first).
        let mut bad = wire.clone();
        bad[8] ^= 0x10;
        let lying = Outboard::decode(&bad, &root).unwrap();
        assert_eq!(lying.len(), ob.len() + 16);
        let last = ob.range(5);
        assert!(lying
            .check_group(5, &data[last.start as usize..last.end as usize])
            .is_err());
        // Truncated, extended, wrong magic.
        assert!(Outboard::decode(&wire[..wire.len() - 32], &root).is_err());
        let mut long = wire.clone();
        long.extend_from_slice(&[0; 32]);
        assert!(Outboard::decode(&long, &root).is_err());
        assert!(Outboard::decode(b"short", &root).is_err());
    }

    #[test]
    fn every_group_checks_and_any_corruption_is_caught() {
        for (k, n) in lengths().into_iter().enumerate() {
            let data = bytes(n, 100 + k as u64);
            let ob = Outboard::of(&data);
            for i in 0..ob.groups() {
                let r = ob.range(i);
                let g = &data[r.start as usize..r.end as usize];
                assert_eq!(ob.check_group(i, g), Ok(()), "length {n} group {i}");
                if !g.is_empty() {
                    let mut bad = g.to_vec();
                    let at = (i as usize * 7919) % bad.len();
                    bad[at] ^= 1;
                    assert_eq!(
                        ob.check_group(i, &bad),
                        Err(BlobError::GroupMismatch { group: i })
                    );
                    assert!(ob.check_group(i, &g[..g.len() - 1]).is_err());
                }
            }
            assert!(ob.check_group(ob.groups(), &[]).is_err());
        }
    }

    #[test]
    fn a_group_is_bound_to_its_position() {
        // Two identical groups at different offsets still have different chaining values,
        // so a peer cannot answer for group 3 with the (valid) bytes of group 1.
        let mut data = bytes(4 * G, 7);
        let (a, b) = data.split_at_mut(2 * G);
        b[..G].copy_from_slice(&a[..G]);
        let ob = Outboard::of(&data);
        assert!(ob.check_group(0, &data[..G]).is_ok());
        assert!(ob.check_group(2, &data[..G]).is_ok()); // same bytes, and they are group 2's
        assert!(ob.check_group(1, &data[..G]).is_err());
        assert!(ob.check_group(3, &data[2 * G..3 * G]).is_err());
    }

    #[test]
    fn partial_files_resume_from_the_groups_that_hash_right() {
        let data = bytes(6 * G + 100, 9);
        let ob = Outboard::of(&data);
        let mut part = vec![0u8; data.len()];
        // Groups 0, 2 and 6 written; group 4 written but torn (half zero).
        for i in [0u64, 2, 6] {
            let r = ob.range(i);
            part[r.start as usize..r.end as usize]
                .copy_from_slice(&data[r.start as usize..r.end as usize]);
        }
        let r = ob.range(4);
        part[r.start as usize..r.start as usize + G / 2]
            .copy_from_slice(&data[r.start as usize..r.start as usize + G / 2]);
        let have = verified_groups(std::io::Cursor::new(&part), &ob).unwrap();
        assert_eq!(have, vec![true, false, true, false, false, false, true]);
        // A partial file cut short: the groups past its end are missing.
        let have = verified_groups(std::io::Cursor::new(&data[..3 * G + 5]), &ob).unwrap();
        assert_eq!(
            have,
            vec![true, true, true, false, false, false, false],
            "short file"
        );
    }
}
