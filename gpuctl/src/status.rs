//! `gpuctl cluster status`: every scheduler replica's Raft state in one table.
//!
//! ```text
//! known URLs ──probe all at once (short timeout)──► answers / causes
//!            + the `addresses` the replicas report ──probe those too
//!            ──report()──► rows + leader ──render──► table | JSON | YAML
//! ```
//!
//! [`report`] and [`table`] are pure, so the tests pin them from fixture
//! answers; only [`cmd_status`] touches the network.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use gpuctl_proto::v1::{ClusterStatusRequest, ClusterStatusResponse};
use serde::Serialize;

use crate::cli::Output;
use crate::client::{self, Client};
use crate::error::{Error, Result, EXIT_FAILURE};
use crate::stdout::out;
use crate::{config, render};

/// A replica is `lagging` when its applied index is this far behind the
/// leader's commit index.
pub const LAG_THRESHOLD: u64 = 100;

/// What asking one address gave.
#[derive(Debug, Clone)]
pub struct Probe {
    /// Normalised URL (`http://host:port`).
    pub url: String,
    /// The answer, or why there was none (`connection refused`, ...).
    pub answer: std::result::Result<ClusterStatusResponse, String>,
}

/// One line of the table (and one object of the JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    /// Raft id; unknown for an address that never answered and that no
    /// replica lists.
    pub id: Option<u64>,
    /// `host:port`.
    pub address: String,
    /// `Leader`, `Follower`, `Candidate`, `PreCandidate`; none if unreachable.
    pub role: Option<String>,
    pub term: Option<u64>,
    pub commit: Option<u64>,
    pub applied: Option<u64>,
    /// Highest log index the leader knows this replica has.
    pub matched: Option<u64>,
    /// `ok`, `lagging`, or `unreachable: <cause>`.
    pub health: String,
    /// The leader this replica knows of (0: none).
    pub leader_id: Option<u64>,
}

/// The whole picture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub rows: Vec<Row>,
    /// The leader's id and `host:port`, when one is known.
    pub leader: Option<(u64, String)>,
    /// The highest term any replica reported.
    pub term: u64,
    pub voters: Vec<u64>,
    /// Voters that answered.
    pub answered: usize,
}

impl Report {
    /// A majority of the voters answered.
    pub fn majority_answered(&self) -> bool {
        let n = if self.voters.is_empty() {
            self.rows.len()
        } else {
            self.voters.len()
        };
        self.answered > n / 2
    }

    /// Exit 0 when a leader is known and a majority answered.
    pub fn healthy(&self) -> bool {
        self.leader.is_some() && self.majority_answered()
    }
}

fn host_port(url: &str) -> String {
    url.strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url)
        .to_string()
}

/// Assemble the rows from what the probes gave.
pub fn report(probes: &[Probe]) -> Report {
    let answers: Vec<&ClusterStatusResponse> = probes
        .iter()
        .filter_map(|p| p.answer.as_ref().ok())
        .collect();
    // Ids of addresses, as the replicas list them.
    let mut id_of: BTreeMap<String, u64> = BTreeMap::new();
    for a in &answers {
        for (id, url) in &a.addresses {
            if let Ok(u) = config::normalize_url(url) {
                id_of.insert(u, *id);
            }
        }
    }
    for p in probes {
        if let Ok(a) = &p.answer {
            id_of.insert(p.url.clone(), a.id);
        }
    }
    let term = answers.iter().map(|a| a.term).max().unwrap_or(0);
    let (leader_answer, leader_id) = find_leader(&answers, term);
    let voters: Vec<u64> = leader_answer
        .or_else(|| answers.iter().find(|a| a.term == term).copied())
        .map(|a| {
            let mut v = a.voters.clone();
            v.sort_unstable();
            v
        })
        .unwrap_or_default();
    let leader_commit = leader_answer
        .map(|a| a.commit_index)
        .or_else(|| answers.iter().map(|a| a.commit_index).max());
    let matched: BTreeMap<u64, u64> = leader_answer
        .map(|a| a.peers.iter().map(|p| (p.id, p.matched)).collect())
        .unwrap_or_default();

    // One row per replica: answers win over failures for the same id.
    let mut by_id: BTreeMap<u64, Row> = BTreeMap::new();
    let mut anonymous: Vec<Row> = Vec::new();
    for p in probes {
        let row = probe_row(p, leader_commit, &matched, &id_of);
        match row.id {
            Some(id) => {
                let keep_old = by_id.get(&id).is_some_and(|old| old.role.is_some());
                if !keep_old {
                    by_id.insert(id, row);
                }
            }
            None => anonymous.push(row),
        }
    }
    let answered = by_id
        .iter()
        .filter(|(id, r)| r.role.is_some() && (voters.is_empty() || voters.contains(id)))
        .count();
    let leader = leader_id.map(|id| {
        let addr = by_id
            .get(&id)
            .map(|r| r.address.clone())
            .or_else(|| {
                id_of
                    .iter()
                    .find(|(_, i)| **i == id)
                    .map(|(u, _)| host_port(u))
            })
            .unwrap_or_else(|| "address unknown".into());
        (id, addr)
    });
    let mut rows: Vec<Row> = by_id.into_values().collect();
    rows.extend(anonymous);
    Report {
        rows,
        leader,
        term,
        voters,
        answered,
    }
}

/// The leader: a replica that says it leads in the newest term (its answer
/// and id), else the leader that replicas in the newest term name (its id).
fn find_leader<'a>(
    answers: &[&'a ClusterStatusResponse],
    term: u64,
) -> (Option<&'a ClusterStatusResponse>, Option<u64>) {
    let leader_answer = answers
        .iter()
        .filter(|a| a.role == "Leader" && a.term == term)
        .max_by_key(|a| a.commit_index)
        .copied();
    let leader_id = leader_answer.map(|a| a.id).or_else(|| {
        let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
        for a in answers
            .iter()
            .filter(|a| a.term == term && a.leader_id != 0)
        {
            *votes.entry(a.leader_id).or_default() += 1;
        }
        votes.into_iter().max_by_key(|(_, n)| *n).map(|(id, _)| id)
    });
    (leader_answer, leader_id)
}

/// One probe's row; a replica that did not answer keeps the id and match
/// index the others know it by.
fn probe_row(
    p: &Probe,
    leader_commit: Option<u64>,
    matched: &BTreeMap<u64, u64>,
    id_of: &BTreeMap<String, u64>,
) -> Row {
    match &p.answer {
        Ok(a) => {
            let lagging =
                leader_commit.is_some_and(|c| c.saturating_sub(a.applied_index) > LAG_THRESHOLD);
            Row {
                id: Some(a.id),
                address: host_port(&p.url),
                role: Some(a.role.clone()),
                term: Some(a.term),
                commit: Some(a.commit_index),
                applied: Some(a.applied_index),
                matched: matched.get(&a.id).copied(),
                health: if lagging { "lagging" } else { "ok" }.into(),
                leader_id: Some(a.leader_id),
            }
        }
        Err(cause) => {
            let id = id_of.get(&p.url).copied();
            Row {
                id,
                address: host_port(&p.url),
                role: None,
                term: None,
                commit: None,
                applied: None,
                matched: id.and_then(|i| matched.get(&i).copied()),
                health: format!("unreachable: {cause}"),
                leader_id: None,
            }
        }
    }
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// The table and the leader line.
pub fn table(r: &Report) -> String {
    let rows: Vec<Vec<String>> = r
        .rows
        .iter()
        .map(|row| {
            vec![
                row.id.map_or_else(|| "?".into(), |i| i.to_string()),
                row.address.clone(),
                row.role.clone().unwrap_or_else(|| "-".into()),
                opt(row.term),
                opt(row.commit),
                opt(row.applied),
                opt(row.matched),
                row.health.clone(),
            ]
        })
        .collect();
    let mut o = render::table(
        &[
            "ID", "ADDRESS", "ROLE", "TERM", "COMMIT", "APPLIED", "MATCHED", "HEALTH",
        ],
        &rows,
    );
    let voters = r
        .voters
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    match &r.leader {
        Some((id, addr)) => o.push_str(&format!(
            "leader: {id} ({addr}), term {}, voters {voters}\n",
            r.term
        )),
        None => o.push_str(&format!(
            "leader: none known (an election may be under way, or a majority is down), term {}, voters {}\n",
            r.term,
            if voters.is_empty() { "unknown".into() } else { voters }
        )),
    }
    o
}

/// Ask one address, within `timeout` for dialling and answering together.
pub async fn probe(url: String, timeout: Duration) -> Probe {
    let ask = async {
        let ch = client::connect_one(&url, timeout).await?;
        // ClusterStatus needs no token.
        let mut c: Client = client::client_for(ch, &client::Bearer::default());
        c.cluster_status(ClusterStatusRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| match std::error::Error::source(&s) {
                Some(src) => client::short_cause(src),
                None => format!("{:?}: {}", s.code(), s.message()),
            })
    };
    let answer = match tokio::time::timeout(timeout, ask).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {}", render_duration(timeout))),
    };
    Probe { url, answer }
}

fn render_duration(d: Duration) -> String {
    crate::duration::format_delay(d)
}

/// Probe `urls` at once.
pub async fn probe_all(urls: &[String], timeout: Duration) -> Vec<Probe> {
    let mut set = tokio::task::JoinSet::new();
    for (i, u) in urls.iter().enumerate() {
        let u = u.clone();
        set.spawn(async move { (i, probe(u, timeout).await) });
    }
    let mut got: Vec<(usize, Probe)> = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok(p) = r {
            got.push(p);
        }
    }
    got.sort_by_key(|(i, _)| *i);
    got.into_iter().map(|(_, p)| p).collect()
}

/// Probe the given addresses, then any other replica they report.
pub async fn gather(urls: &[String], timeout: Duration) -> Vec<Probe> {
    let mut probes = probe_all(urls, timeout).await;
    let known: BTreeSet<String> = probes.iter().map(|p| p.url.clone()).collect();
    let more: BTreeSet<String> = probes
        .iter()
        .filter_map(|p| p.answer.as_ref().ok())
        .flat_map(|a| a.addresses.values())
        .filter_map(|u| config::normalize_url(u).ok())
        .filter(|u| !known.contains(u))
        .collect();
    if !more.is_empty() {
        let more: Vec<String> = more.into_iter().collect();
        probes.extend(probe_all(&more, timeout).await);
    }
    probes
}

/// `gpuctl cluster status`.
pub async fn cmd_status(urls: &[String], output: Output, timeout: Duration) -> Result<u8> {
    let probes = gather(urls, timeout).await;
    let r = report(&probes);
    match output {
        Output::Table => out(&table(&r))?,
        Output::Json => {
            let mut s = serde_json::to_string_pretty(&r.rows).expect("json");
            s.push('\n');
            out(&s)?;
        }
        Output::Yaml => out(&serde_yaml_ng::to_string(&r.rows)
            .map_err(|e| Error::Other(format!("cannot render YAML: {e}")))?)?,
    }
    if r.healthy() {
        return Ok(0);
    }
    let voters = if r.voters.is_empty() {
        r.rows.len()
    } else {
        r.voters.len()
    };
    if r.leader.is_none() {
        eprintln!(
            "error: no leader known ({} of {voters} replicas answered); writes wait until a majority can elect one",
            r.answered
        );
    } else {
        eprintln!(
            "error: only {} of {voters} voters answered; writes need a majority",
            r.answered
        );
    }
    Ok(EXIT_FAILURE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpuctl_proto::v1::PeerProgress;

    fn addresses() -> std::collections::HashMap<u64, String> {
        (1..=3)
            .map(|i| (i, format!("http://127.0.0.1:700{i}")))
            .collect()
    }

    fn answer(
        id: u64,
        role: &str,
        leader: u64,
        term: u64,
        commit: u64,
        applied: u64,
    ) -> ClusterStatusResponse {
        ClusterStatusResponse {
            id,
            leader_id: leader,
            term,
            commit_index: commit,
            applied_index: applied,
            role: role.into(),
            voters: vec![3, 1, 2],
            peers: if role == "Leader" {
                vec![
                    PeerProgress {
                        id: 1,
                        matched: 900,
                        next_index: 901,
                        state: "Replicate".into(),
                        recent_active: true,
                    },
                    PeerProgress {
                        id: 2,
                        matched: 1000,
                        next_index: 1001,
                        state: "Replicate".into(),
                        recent_active: true,
                    },
                    PeerProgress {
                        id: 3,
                        matched: 12,
                        next_index: 13,
                        state: "Probe".into(),
                        recent_active: false,
                    },
                ]
            } else {
                vec![]
            },
            addresses: addresses(),
        }
    }

    fn ok(id: u64, a: ClusterStatusResponse) -> Probe {
        Probe {
            url: format!("http://127.0.0.1:700{id}"),
            answer: Ok(a),
        }
    }

    #[test]
    fn leader_follower_lagging_and_unreachable() {
        let probes = vec![
            ok(1, answer(1, "Follower", 2, 5, 1000, 880)),
            ok(2, answer(2, "Leader", 2, 5, 1000, 1000)),
            Probe {
                url: "http://127.0.0.1:7003".into(),
                answer: Err("connection refused".into()),
            },
        ];
        let r = report(&probes);
        assert_eq!(r.leader, Some((2, "127.0.0.1:7002".into())));
        assert_eq!(r.voters, vec![1, 2, 3]);
        assert_eq!(r.answered, 2);
        assert!(r.healthy());
        assert_eq!(
            table(&r),
            "\
ID   ADDRESS          ROLE       TERM   COMMIT   APPLIED   MATCHED   HEALTH
1    127.0.0.1:7001   Follower   5      1000     880       900       lagging
2    127.0.0.1:7002   Leader     5      1000     1000      1000      ok
3    127.0.0.1:7003   -          -      -        -         12        unreachable: connection refused
leader: 2 (127.0.0.1:7002), term 5, voters 1,2,3
"
        );
        let json = serde_json::to_value(&r.rows).unwrap();
        assert_eq!(json[1]["role"], "Leader");
        assert_eq!(json[1]["matched"], 1000);
        assert_eq!(json[2]["id"], 3);
        assert_eq!(json[2]["role"], serde_json::Value::Null);
        assert_eq!(json[2]["health"], "unreachable: connection refused");
        assert_eq!(json[0]["leaderId"], 2);
    }

    #[test]
    fn no_leader_or_no_majority_is_unhealthy() {
        // One survivor of three: it knows no leader.
        let probes = vec![
            ok(1, answer(1, "PreCandidate", 0, 7, 1000, 1000)),
            Probe {
                url: "http://127.0.0.1:7002".into(),
                answer: Err("connection refused".into()),
            },
            Probe {
                url: "http://127.0.0.1:7003".into(),
                answer: Err("no answer within 2s".into()),
            },
        ];
        let r = report(&probes);
        assert_eq!(r.leader, None);
        assert!(!r.healthy());
        let t = table(&r);
        assert!(
            t.ends_with("leader: none known (an election may be under way, or a majority is down), term 7, voters 1,2,3\n"),
            "{t}"
        );
        // Followers name a leader we cannot reach, but only one answered.
        let probes = vec![
            ok(1, answer(1, "Follower", 2, 5, 10, 10)),
            Probe {
                url: "http://127.0.0.1:7002".into(),
                answer: Err("connection refused".into()),
            },
            Probe {
                url: "http://127.0.0.1:7003".into(),
                answer: Err("connection refused".into()),
            },
        ];
        let r = report(&probes);
        assert_eq!(r.leader, Some((2, "127.0.0.1:7002".into())));
        assert_eq!(r.answered, 1);
        assert!(!r.healthy());
    }

    #[test]
    fn unknown_addresses_and_stale_terms() {
        // An address nobody lists keeps "?" for its id; a replica still in an
        // old term does not decide the leader.
        let probes = vec![
            ok(1, answer(1, "Leader", 1, 4, 50, 50)),
            ok(3, answer(3, "Leader", 3, 6, 60, 60)),
            Probe {
                url: "http://10.0.0.9:7000".into(),
                answer: Err("timed out".into()),
            },
        ];
        let r = report(&probes);
        assert_eq!(r.leader, Some((3, "127.0.0.1:7003".into())));
        assert_eq!(r.term, 6);
        assert_eq!(r.rows.last().unwrap().id, None);
        assert!(table(&r).contains("?    10.0.0.9:7000"), "{}", table(&r));
    }

    #[tokio::test]
    async fn other_replicas_are_found_through_the_first_answer() {
        use crate::testserver::{closed_url, serve, Fake};
        use std::sync::Arc;
        let (f1, f2) = (Arc::new(Fake::default()), Arc::new(Fake::default()));
        let (u1, u2, u3) = (
            serve(f1.clone()).await,
            serve(f2.clone()).await,
            closed_url(),
        );
        let addrs: std::collections::HashMap<u64, String> =
            [(1, u1.clone()), (2, u2.clone()), (3, u3.clone())].into();
        *f1.status.lock().unwrap() = ClusterStatusResponse {
            addresses: addrs.clone(),
            ..answer(1, "Follower", 2, 3, 40, 40)
        };
        *f2.status.lock().unwrap() = ClusterStatusResponse {
            addresses: addrs,
            ..answer(2, "Leader", 2, 3, 40, 40)
        };
        let probes = gather(std::slice::from_ref(&u1), Duration::from_secs(2)).await;
        assert_eq!(probes.len(), 3);
        let r = report(&probes);
        assert_eq!(r.leader.as_ref().map(|l| l.0), Some(2));
        assert!(r.healthy());
        assert_eq!(r.rows[2].id, Some(3));
        assert!(
            r.rows[2]
                .health
                .starts_with("unreachable: connection refused"),
            "{:?}",
            r.rows[2]
        );
    }
}
