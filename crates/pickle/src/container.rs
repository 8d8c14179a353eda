//! What wraps the pickle stream: nothing, or one of the compressions joblib writes. Recognised
//! by magic bytes (as joblib does), never by file name.

use std::io::Read;

use crate::error::{Error, Result};

/// How a file's pickle stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain pickle stream.
    None,
    /// zlib (joblib `compress=('zlib', n)` or `compress=n`).
    Zlib,
    /// gzip.
    Gzip,
    /// bzip2.
    Bz2,
    /// xz.
    Xz,
    /// lzma "alone" format.
    Lzma,
    /// LZ4 frame.
    Lz4,
}

impl Compression {
    /// Lower-case name, as joblib spells it.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Zlib => "zlib",
            Compression::Gzip => "gzip",
            Compression::Bz2 => "bz2",
            Compression::Xz => "xz",
            Compression::Lzma => "lzma",
            Compression::Lz4 => "lz4",
        }
    }
}

/// Recognises the compression from the first bytes.
pub fn detect(bytes: &[u8]) -> Result<Compression> {
    let starts = |m: &[u8]| bytes.starts_with(m);
    Ok(if starts(b"\x1f\x8b") {
        Compression::Gzip
    } else if starts(b"BZh") {
        Compression::Bz2
    } else if starts(b"\xfd7zXZ\x00") {
        Compression::Xz
    } else if starts(b"\x04\x22\x4d\x18") {
        Compression::Lz4
    } else if starts(b"\x5d\x00\x00") {
        Compression::Lzma
    } else if bytes.len() >= 2 && bytes[0] == 0x78 && matches!(bytes[1], 0x01 | 0x5e | 0x9c | 0xda)
    {
        Compression::Zlib
    } else if starts(b"ZF") {
        return Err(Error::Unsupported {
            offset: 0,
            what: "a joblib file from before joblib 0.10 (arrays kept in separate files); load it with joblib and save it again".into(),
        });
    } else {
        Compression::None
    })
}

/// Decompresses, refusing output larger than `limit` bytes.
pub fn decompress(bytes: &[u8], codec: Compression, limit: usize) -> Result<Vec<u8>> {
    let err = |e: std::io::Error| Error::Decompress {
        codec: codec.name(),
        message: e.to_string(),
    };
    let mut out = Vec::new();
    let cap = limit as u64 + 1;
    match codec {
        Compression::None => return Ok(bytes.to_vec()),
        Compression::Zlib => {
            flate2::read::ZlibDecoder::new(bytes)
                .take(cap)
                .read_to_end(&mut out)
                .map_err(err)?;
        }
        Compression::Gzip => {
            flate2::read::MultiGzDecoder::new(bytes)
                .take(cap)
                .read_to_end(&mut out)
                .map_err(err)?;
        }
        Compression::Bz2 => {
            bzip2::read::MultiBzDecoder::new(bytes)
                .take(cap)
                .read_to_end(&mut out)
                .map_err(err)?;
        }
        Compression::Lz4 => {
            lz4_flex::frame::FrameDecoder::new(bytes)
                .take(cap)
                .read_to_end(&mut out)
                .map_err(err)?;
        }
        Compression::Xz | Compression::Lzma => {
            let mut input = std::io::BufReader::new(bytes);
            let opts = lzma_rs::decompress::Options {
                memlimit: Some(limit),
                ..Default::default()
            };
            let mut sink = LimitedWriter {
                out: &mut out,
                limit,
            };
            let r = if codec == Compression::Xz {
                lzma_rs::xz_decompress(&mut input, &mut sink)
            } else {
                lzma_rs::lzma_decompress_with_options(&mut input, &mut sink, &opts)
            };
            r.map_err(|e| Error::Decompress {
                codec: codec.name(),
                message: e.to_string(),
            })?;
        }
    }
    if out.len() > limit {
        return Err(Error::Limit(format!(
            "{} data decompresses to more than {limit} bytes",
            codec.name()
        )));
    }
    Ok(out)
}

/// Compresses a pickle stream as joblib writes it with `codec` (what [`detect`] recognises and
/// [`decompress`] reads back), at joblib's default level (3) where a level applies. (xz and
/// lzma come from lzma-rs's simple encoder: valid streams, little compression.)
pub fn compress(bytes: &[u8], codec: Compression) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let level = 3;
    Ok(match codec {
        Compression::None => bytes.to_vec(),
        Compression::Zlib => {
            let mut e =
                flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(level));
            e.write_all(bytes)?;
            e.finish()?
        }
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
            e.write_all(bytes)?;
            e.finish()?
        }
        Compression::Bz2 => {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::new(level));
            e.write_all(bytes)?;
            e.finish()?
        }
        Compression::Lz4 => {
            let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
            e.write_all(bytes)?;
            e.finish().map_err(std::io::Error::other)?
        }
        Compression::Xz => {
            let mut out = Vec::new();
            lzma_rs::xz_compress(&mut std::io::BufReader::new(bytes), &mut out)?;
            out
        }
        Compression::Lzma => {
            let mut out = Vec::new();
            lzma_rs::lzma_compress(&mut std::io::BufReader::new(bytes), &mut out)?;
            out
        }
    })
}

/// A writer that fails once more than `limit` bytes were written, so that a decompression bomb
/// stops early.
struct LimitedWriter<'a> {
    out: &'a mut Vec<u8>,
    limit: usize,
}

impl std::io::Write for LimitedWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.out.len() + buf.len() > self.limit {
            return Err(std::io::Error::other(format!(
                "output larger than {} bytes",
                self.limit
            )));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod compress_tests {
    use super::*;

    #[test]
    fn every_codec_round_trips_and_is_recognised() {
        let data: Vec<u8> = (0..10_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for codec in [
            Compression::None,
            Compression::Zlib,
            Compression::Gzip,
            Compression::Bz2,
            Compression::Xz,
            Compression::Lzma,
            Compression::Lz4,
        ] {
            let packed = compress(&data, codec).unwrap();
            // (lzma-rs's encoder writes valid but barely compressed xz and lzma streams.)
            if matches!(
                codec,
                Compression::Zlib | Compression::Gzip | Compression::Bz2 | Compression::Lz4
            ) {
                assert!(packed.len() < data.len(), "{codec:?}");
            }
            assert_eq!(detect(&packed).unwrap(), codec);
            assert_eq!(
                decompress(&packed, codec, data.len()).unwrap(),
                data,
                "{codec:?}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn zlib_round_trip_and_bomb_limit() {
        let data = vec![b'x'; 10_000];
        let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&data).unwrap();
        let z = enc.finish().unwrap();
        assert_eq!(detect(&z).unwrap(), Compression::Zlib);
        assert_eq!(decompress(&z, Compression::Zlib, 1 << 20).unwrap(), data);
        let err = decompress(&z, Compression::Zlib, 100).unwrap_err();
        assert!(matches!(err, Error::Limit(_)), "{err}");
    }

    #[test]
    fn plain_pickles_are_not_mistaken_for_compressed() {
        assert_eq!(detect(b"\x80\x04\x95").unwrap(), Compression::None);
        assert!(detect(b"ZF0x10").is_err());
    }
}
