//! A broker connection: requests framed and matched to their answers, and the requests about
//! the topic itself (metadata, the group coordinator, earliest offsets, fetch).

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Res;
use super::wire::{
    API_FETCH, API_FIND_COORDINATOR, API_LIST_OFFSETS, API_METADATA, OFFSET_OUT_OF_RANGE, R, W,
    check, record_batches,
};

/// A broker connection: one request at a time.
pub(super) struct Conn {
    stream: TcpStream,
    client_id: String,
    correlation: i32,
    addr: String,
}

impl Conn {
    pub(super) async fn connect(addr: &str, client_id: &str) -> Res<Conn> {
        let stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
            .await
            .map_err(|_| format!("connecting to {addr}: timed out"))?
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        Ok(Conn {
            stream,
            client_id: client_id.to_string(),
            correlation: 0,
            addr: addr.to_string(),
        })
    }

    /// Sends a request and returns the response body (after the correlation id).
    pub(super) async fn call(
        &mut self,
        api: i16,
        version: i16,
        body: &[u8],
        wait: Duration,
    ) -> Res<Vec<u8>> {
        self.correlation += 1;
        let mut w = W(Vec::with_capacity(body.len() + 32));
        w.i32(0)
            .i16(api)
            .i16(version)
            .i32(self.correlation)
            .str(&self.client_id);
        w.0.extend_from_slice(body);
        let size = (w.0.len() - 4) as i32;
        w.0[..4].copy_from_slice(&size.to_be_bytes());
        let addr = self.addr.clone();
        let io = async {
            self.stream.write_all(&w.0).await?;
            let n = self.stream.read_i32().await?;
            if !(4..=256 << 20).contains(&n) {
                return Err(std::io::Error::other(format!("a response of {n} bytes")));
            }
            let mut buf = vec![0; n as usize];
            self.stream.read_exact(&mut buf).await?;
            Ok(buf)
        };
        let buf = tokio::time::timeout(wait + Duration::from_secs(30), io)
            .await
            .map_err(|_| format!("{addr}: no answer to request {api}"))?
            .map_err(|e| format!("{addr}: {e}"))?;
        let correlation = i32::from_be_bytes(buf[..4].try_into().expect("4"));
        if correlation != self.correlation {
            return Err(format!("{addr}: answer to another request"));
        }
        Ok(buf[4..].to_vec())
    }

    /// Brokers (id → address) and the topic's partitions (id, leader).
    pub(super) async fn metadata(
        &mut self,
        topic: &str,
    ) -> Res<(BTreeMap<i32, String>, Vec<(i32, i32)>)> {
        let mut w = W(Vec::new());
        w.i32(1).str(topic);
        let resp = self.call(API_METADATA, 1, &w.0, Duration::ZERO).await?;
        let mut r = R {
            b: &resp,
            what: "metadata",
        };
        let mut brokers = BTreeMap::new();
        for _ in 0..r.count()? {
            let id = r.i32()?;
            let host = r.str()?;
            let port = r.i32()?;
            let _rack = r.str()?;
            brokers.insert(id, format!("{host}:{port}"));
        }
        let _controller = r.i32()?;
        let mut partitions = Vec::new();
        for _ in 0..r.count()? {
            let code = r.i16()?;
            let name = r.str()?;
            let _internal = r.i8()?;
            check(code, &format!("topic {name}"))?;
            for _ in 0..r.count()? {
                let code = r.i16()?;
                let p = r.i32()?;
                let leader = r.i32()?;
                for _ in 0..r.count()? {
                    r.i32()?;
                }
                for _ in 0..r.count()? {
                    r.i32()?;
                }
                check(code, &format!("topic {name} partition {p}"))?;
                if name == topic {
                    partitions.push((p, leader));
                }
            }
        }
        if partitions.is_empty() {
            return Err(format!("topic {topic} has no partitions (does it exist?)"));
        }
        Ok((brokers, partitions))
    }

    pub(super) async fn find_coordinator(&mut self, group: &str) -> Res<String> {
        let mut w = W(Vec::new());
        w.str(group).i8(0);
        let resp = self
            .call(API_FIND_COORDINATOR, 1, &w.0, Duration::ZERO)
            .await?;
        let mut r = R {
            b: &resp,
            what: "find coordinator",
        };
        let _throttle = r.i32()?;
        let code = r.i16()?;
        let _message = r.str()?;
        check(code, "finding the group coordinator")?;
        let _node = r.i32()?;
        let host = r.str()?;
        let port = r.i32()?;
        Ok(format!("{host}:{port}"))
    }

    pub(super) async fn earliest_offset(&mut self, topic: &str, partition: i32) -> Res<i64> {
        let mut w = W(Vec::new());
        w.i32(-1).i32(1).str(topic).i32(1).i32(partition).i64(-2);
        let resp = self.call(API_LIST_OFFSETS, 1, &w.0, Duration::ZERO).await?;
        let mut r = R {
            b: &resp,
            what: "list offsets",
        };
        for _ in 0..r.count()? {
            let _t = r.str()?;
            for _ in 0..r.count()? {
                let p = r.i32()?;
                check(r.i16()?, &format!("earliest offset of partition {p}"))?;
                let _ts = r.i64()?;
                let offset = r.i64()?;
                if p == partition {
                    return Ok(offset);
                }
            }
        }
        Err(format!("no earliest offset for partition {partition}"))
    }

    /// Records of each partition from its offset: `(partition, [(offset, value)])`, or `None`
    /// for a partition whose offset the broker no longer holds.
    #[allow(clippy::type_complexity)]
    pub(super) async fn fetch(
        &mut self,
        topic: &str,
        wanted: &[(i32, i64)],
    ) -> Res<Vec<(i32, Option<Vec<(i64, Vec<u8>)>>)>> {
        let wait = Duration::from_millis(200);
        let mut w = W(Vec::new());
        w.i32(-1)
            .i32(wait.as_millis() as i32)
            .i32(1)
            .i32(16 << 20)
            .i8(0)
            .i32(1)
            .str(topic)
            .i32(wanted.len() as i32);
        for (p, o) in wanted {
            w.i32(*p).i64(*o).i32(4 << 20);
        }
        let resp = self.call(API_FETCH, 4, &w.0, wait).await?;
        let mut r = R {
            b: &resp,
            what: "fetch",
        };
        let _throttle = r.i32()?;
        let mut out = Vec::new();
        for _ in 0..r.count()? {
            let _t = r.str()?;
            for _ in 0..r.count()? {
                let p = r.i32()?;
                let code = r.i16()?;
                let _hw = r.i64()?;
                let _lso = r.i64()?;
                for _ in 0..r.count()? {
                    r.i64()?;
                    r.i64()?;
                }
                let records = r.bytes()?;
                if code == OFFSET_OUT_OF_RANGE {
                    // Deleted by the topic's retention: the caller starts over at the earliest.
                    out.push((p, None));
                    continue;
                }
                check(code, &format!("fetching partition {p}"))?;
                out.push((p, Some(record_batches(records)?)));
            }
        }
        Ok(out)
    }
}
