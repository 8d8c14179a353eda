//! Group membership: joining and syncing (with the range assignor when this member leads),
//! heartbeats, and the group's committed offsets.

use std::collections::BTreeMap;
use std::time::Duration;

use super::Res;
use super::conn::Conn;
use super::wire::{
    API_HEARTBEAT, API_JOIN_GROUP, API_OFFSET_COMMIT, API_OFFSET_FETCH, API_SYNC_GROUP,
    MEMBER_ID_REQUIRED, R, W, check,
};

/// The range assignor: each member (in id order) gets a contiguous share of the partitions.
pub(super) fn range_assign(
    members: &[(String, Vec<u8>)],
    partitions: &[(i32, i32)],
    topic: &str,
) -> Vec<(String, Vec<i32>)> {
    let mut ids: Vec<&String> = members
        .iter()
        .filter(|(_, meta)| subscription_topics(meta).iter().any(|t| t == topic))
        .map(|(id, _)| id)
        .collect();
    ids.sort();
    let mut ps: Vec<i32> = partitions.iter().map(|(p, _)| *p).collect();
    ps.sort_unstable();
    let n = ids.len().max(1);
    let (per, extra) = (ps.len() / n, ps.len() % n);
    let mut at = 0;
    ids.iter()
        .enumerate()
        .map(|(i, id)| {
            let take = per + usize::from(i < extra);
            let share = ps[at..at + take].to_vec();
            at += take;
            ((*id).clone(), share)
        })
        .collect()
}

pub(super) fn subscription(topic: &str) -> Vec<u8> {
    let mut w = W(Vec::new());
    w.i16(0).i32(1).str(topic).i32(-1);
    w.0
}

fn subscription_topics(meta: &[u8]) -> Vec<String> {
    let mut r = R {
        b: meta,
        what: "subscription",
    };
    let mut out = Vec::new();
    if r.i16().is_ok()
        && let Ok(n) = r.count()
    {
        for _ in 0..n {
            match r.str() {
                Ok(t) => out.push(t),
                Err(_) => break,
            }
        }
    }
    out
}

pub(super) struct Joined {
    pub(super) generation: i32,
    pub(super) leader: String,
    pub(super) member_id: String,
    pub(super) members: Vec<(String, Vec<u8>)>,
}

impl Conn {
    pub(super) async fn join_group(
        &mut self,
        group: &str,
        member_id: &str,
        topic: &str,
    ) -> Res<Joined> {
        let mut w = W(Vec::new());
        w.str(group)
            .i32(10_000) // session timeout
            .i32(3_000) // rebalance timeout: how long the broker waits for other members
            .str(member_id)
            .str("consumer")
            .i32(1)
            .str("range")
            .bytes(&subscription(topic));
        let resp = self
            .call(API_JOIN_GROUP, 1, &w.0, Duration::from_secs(5))
            .await?;
        let mut r = R {
            b: &resp,
            what: "join group",
        };
        let code = r.i16()?;
        let generation = r.i32()?;
        let _protocol = r.str()?;
        let leader = r.str()?;
        let member_id = r.str()?;
        if code == MEMBER_ID_REQUIRED && !member_id.is_empty() {
            // The broker named our member id; join again with it.
            return Box::pin(self.join_group(group, &member_id, topic)).await;
        }
        check(code, "joining the group")?;
        let mut members = Vec::new();
        for _ in 0..r.count()? {
            let id = r.str()?;
            let meta = r.bytes()?.to_vec();
            members.push((id, meta));
        }
        Ok(Joined {
            generation,
            leader,
            member_id,
            members,
        })
    }

    pub(super) async fn sync_group(
        &mut self,
        group: &str,
        generation: i32,
        member_id: &str,
        assignments: &[(String, Vec<i32>)],
        topic: &str,
    ) -> Res<Vec<i32>> {
        let mut w = W(Vec::new());
        w.str(group)
            .i32(generation)
            .str(member_id)
            .i32(assignments.len() as i32);
        for (id, parts) in assignments {
            let mut a = W(Vec::new());
            a.i16(0).i32(1).str(topic).i32(parts.len() as i32);
            for p in parts {
                a.i32(*p);
            }
            a.i32(-1);
            w.str(id).bytes(&a.0);
        }
        let resp = self
            .call(API_SYNC_GROUP, 1, &w.0, Duration::from_secs(5))
            .await?;
        let mut r = R {
            b: &resp,
            what: "sync group",
        };
        let _throttle = r.i32()?;
        check(r.i16()?, "syncing the group")?;
        let assignment = r.bytes()?;
        let mut mine = Vec::new();
        if !assignment.is_empty() {
            let mut a = R {
                b: assignment,
                what: "assignment",
            };
            let _version = a.i16()?;
            for _ in 0..a.count()? {
                let t = a.str()?;
                for _ in 0..a.count()? {
                    let p = a.i32()?;
                    if t == topic {
                        mine.push(p);
                    }
                }
            }
        }
        Ok(mine)
    }

    pub(super) async fn heartbeat(
        &mut self,
        group: &str,
        generation: i32,
        member_id: &str,
    ) -> Res<()> {
        let mut w = W(Vec::new());
        w.str(group).i32(generation).str(member_id);
        let resp = self.call(API_HEARTBEAT, 1, &w.0, Duration::ZERO).await?;
        let mut r = R {
            b: &resp,
            what: "heartbeat",
        };
        let _throttle = r.i32()?;
        check(r.i16()?, "heartbeat")
    }

    pub(super) async fn offset_fetch(
        &mut self,
        group: &str,
        topic: &str,
        partitions: &[i32],
    ) -> Res<BTreeMap<i32, i64>> {
        let mut w = W(Vec::new());
        w.str(group).i32(1).str(topic).i32(partitions.len() as i32);
        for p in partitions {
            w.i32(*p);
        }
        let resp = self.call(API_OFFSET_FETCH, 1, &w.0, Duration::ZERO).await?;
        let mut r = R {
            b: &resp,
            what: "offset fetch",
        };
        let mut out = BTreeMap::new();
        for _ in 0..r.count()? {
            let _t = r.str()?;
            for _ in 0..r.count()? {
                let p = r.i32()?;
                let offset = r.i64()?;
                let _meta = r.str()?;
                check(r.i16()?, &format!("committed offset of partition {p}"))?;
                out.insert(p, offset);
            }
        }
        Ok(out)
    }

    pub(super) async fn offset_commit(
        &mut self,
        group: &str,
        generation: i32,
        member_id: &str,
        topic: &str,
        offsets: &BTreeMap<i32, i64>,
    ) -> Res<()> {
        let mut w = W(Vec::new());
        w.str(group)
            .i32(generation)
            .str(member_id)
            .i64(-1)
            .i32(1)
            .str(topic)
            .i32(offsets.len() as i32);
        for (p, o) in offsets {
            w.i32(*p).i64(*o).null_str();
        }
        let resp = self
            .call(API_OFFSET_COMMIT, 2, &w.0, Duration::ZERO)
            .await?;
        let mut r = R {
            b: &resp,
            what: "offset commit",
        };
        for _ in 0..r.count()? {
            let _t = r.str()?;
            for _ in 0..r.count()? {
                let p = r.i32()?;
                check(r.i16()?, &format!("committing partition {p}"))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_assignor_splits_in_member_order() {
        let sub = subscription("t");
        let members = vec![("b".to_string(), sub.clone()), ("a".to_string(), sub)];
        let parts: Vec<(i32, i32)> = (0..5).map(|p| (p, 1)).collect();
        let a = range_assign(&members, &parts, "t");
        assert_eq!(
            a,
            vec![("a".into(), vec![0, 1, 2]), ("b".into(), vec![3, 4])]
        );
    }
}
