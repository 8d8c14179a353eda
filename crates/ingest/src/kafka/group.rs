//! Group membership: joining and syncing (with the range assignor when this member leads),
//! heartbeats, and the group's committed offsets.

use std::collections::BTreeMap;
use std::time::Duration;

use super::conn::Conn;
use super::wire::{
    HEARTBEAT, JOIN_GROUP, KafkaCode, OFFSET_COMMIT, OFFSET_FETCH, R, SYNC_GROUP, W,
};
use crate::error::Result;

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

/// This member's subscription metadata (consumer protocol v0): the one topic.
pub(super) fn subscription(topic: &str) -> Vec<u8> {
    let mut w = W(Vec::new());
    w.i16(0).i32(1).str(topic).i32(-1);
    w.0
}

/// The topics a member's subscription metadata names (none if it cannot be read).
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

/// What joining told this member.
pub(super) struct Joined {
    /// The group's generation, which every later request of this membership names.
    pub(super) generation: i32,
    /// The leader's member id: the leader assigns partitions.
    pub(super) leader: String,
    /// This member's id.
    pub(super) member_id: String,
    /// Every member's id and subscription metadata (for the leader only; empty otherwise).
    pub(super) members: Vec<(String, Vec<u8>)>,
}

impl Conn {
    /// Joins `group` (again, with `member_id`, or as a new member when it is empty) for
    /// `topic`; a broker asking for a member id first is answered by joining again with it.
    pub(super) async fn join_group(
        &mut self,
        group: &str,
        member_id: &str,
        topic: &str,
        session_timeout: Duration,
    ) -> Result<Joined> {
        let mut w = W(Vec::new());
        w.str(group)
            .i32(i32::try_from(session_timeout.as_millis()).unwrap_or(i32::MAX))
            .i32(3_000) // rebalance timeout: how long the broker waits for other members
            .str(member_id)
            .str("consumer")
            .i32(1)
            .str("range")
            .bytes(&subscription(topic));
        let resp = self.call(JOIN_GROUP, &w.0, Duration::from_secs(5)).await?;
        let mut r = R {
            b: &resp,
            what: "join group",
        };
        let code = r.code()?;
        let generation = r.i32()?;
        let _protocol = r.str()?;
        let leader = r.str()?;
        let member_id = r.str()?;
        if code == KafkaCode::MEMBER_ID_REQUIRED && !member_id.is_empty() {
            // The broker named our member id; join again with it.
            return Box::pin(self.join_group(group, &member_id, topic, session_timeout)).await;
        }
        code.check("joining the group")?;
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

    /// Ends the join: the leader hands in `assignments`, and every member learns its
    /// partitions of `topic`.
    pub(super) async fn sync_group(
        &mut self,
        group: &str,
        generation: i32,
        member_id: &str,
        assignments: &[(String, Vec<i32>)],
        topic: &str,
    ) -> Result<Vec<i32>> {
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
        let resp = self.call(SYNC_GROUP, &w.0, Duration::from_secs(5)).await?;
        let mut r = R {
            b: &resp,
            what: "sync group",
        };
        let throttle = r.i32()?;
        self.throttled(throttle);
        r.code()?.check("syncing the group")?;
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

    /// Tells the coordinator this member is alive; an error code here means rejoin.
    pub(super) async fn heartbeat(
        &mut self,
        group: &str,
        generation: i32,
        member_id: &str,
    ) -> Result<()> {
        let mut w = W(Vec::new());
        w.str(group).i32(generation).str(member_id);
        let resp = self.call(HEARTBEAT, &w.0, Duration::ZERO).await?;
        let mut r = R {
            b: &resp,
            what: "heartbeat",
        };
        let throttle = r.i32()?;
        self.throttled(throttle);
        r.code()?.check("heartbeat")
    }

    /// The offsets `group` committed for `partitions` (-1 for none).
    pub(super) async fn offset_fetch(
        &mut self,
        group: &str,
        topic: &str,
        partitions: &[i32],
    ) -> Result<BTreeMap<i32, i64>> {
        let mut w = W(Vec::new());
        w.str(group).i32(1).str(topic).i32(partitions.len() as i32);
        for p in partitions {
            w.i32(*p);
        }
        let resp = self.call(OFFSET_FETCH, &w.0, Duration::ZERO).await?;
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
                r.code()?
                    .check(format_args!("committed offset of partition {p}"))?;
                out.insert(p, offset);
            }
        }
        Ok(out)
    }

    /// Commits `offsets` (partition → next offset to read) for `group`.
    pub(super) async fn offset_commit(
        &mut self,
        group: &str,
        generation: i32,
        member_id: &str,
        topic: &str,
        offsets: &BTreeMap<i32, i64>,
    ) -> Result<()> {
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
        let resp = self.call(OFFSET_COMMIT, &w.0, Duration::ZERO).await?;
        let mut r = R {
            b: &resp,
            what: "offset commit",
        };
        for _ in 0..r.count()? {
            let _t = r.str()?;
            for _ in 0..r.count()? {
                let p = r.i32()?;
                r.code()?.check(format_args!("committing partition {p}"))?;
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
