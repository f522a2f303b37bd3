//! The cluster: members, leader, each member's health and lag (as the
//! leader sees them), this node's disk and blob repair. It reloads itself
//! every few seconds. Like `/_berth/cluster/status`, anyone may look.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::html;

use crate::cluster::status::{MemberReport, StatusReport};
use crate::metrics::State as _;
use crate::ui::layout::{self, facts, text, Frame};
use crate::ui::{Ui, Visitor};

/// Seconds between reloads.
const REFRESH: u32 = 5;
/// A member the leader has not heard from for this long is down: heartbeats
/// go out several times a second, so a few seconds is many missed answers.
const DOWN_AFTER_MS: u64 = 3_000;

/// How a member is doing, as far as the report tells.
#[derive(Debug, PartialEq, Eq)]
enum Health {
    Up,
    Down,
    /// The view is not the leader's (there is none): heartbeats unknown.
    Unknown,
}

impl Health {
    fn of(report: &StatusReport, m: &MemberReport) -> Health {
        let leaders_view = report.leader_id == Some(report.node_id);
        match m.last_heard_ms {
            _ if m.node_id == report.node_id => Health::Up,
            Some(ms) if leaders_view && ms <= DOWN_AFTER_MS => Health::Up,
            _ if leaders_view => Health::Down,
            _ => Health::Unknown,
        }
    }

    fn text(&self) -> &'static str {
        match self {
            Health::Up => "up",
            Health::Down => "down",
            Health::Unknown => "unknown",
        }
    }
}

pub async fn show(State(ui): State<Ui>, visitor: Visitor) -> Response {
    let report = ui.reg.leader_status().await;
    let here = ui.reg.snapshot();
    let this_node = ui.reg.node_id();
    let leader = report.members.iter().find(|m| m.leader);
    let repair = report.repair.clone().unwrap_or_default();
    let used = here.disk_total.saturating_sub(here.disk_free);
    let content = html! {
        h1 { "Cluster" }
        @if report.leader_id.is_none() {
            p #error .error role="alert" { "No leader: the cluster cannot accept writes until a majority of members can reach each other." }
        }
        (facts(Some("cluster-summary"), [
            ("Leader", text(leader.map(|m| m.api_addr.as_str()).unwrap_or("none"))),
            ("Term", text(report.term.to_string())),
            ("Committed index", text(report.committed_index.map(|i| i.to_string()).unwrap_or_default())),
            ("Members", text(report.members.len().to_string())),
            ("Under-replicated blobs", html! { span #under-replicated { (repair.under_replicated) } }),
            ("Blobs with no live copy", text(repair.unavailable.to_string())),
            ("Repair", text(match repair.bytes_to_copy {
                0 => "nothing to copy".to_owned(),
                n => format!("{} to copy, at {}/s", layout::size(n), layout::size(repair.copy_rate as u64)),
            })),
            ("Disk of this node", text(match here.disk_total {
                0 => "unknown".to_owned(),
                total => format!("{} used of {} ({} free)", layout::size(used), layout::size(total), layout::size(here.disk_free)),
            })),
            ("Blobs on this node", text(format!("about {}", here.local_blobs))),
        ]))
        div.scroll { table #members {
            caption { "Members, as node " (report.node_id) " sees them; this page is served by node " (this_node) }
            thead { tr {
                th scope="col" { "Node" } th scope="col" { "Address" } th scope="col" { "Role" }
                th scope="col" { "State" } th scope="col" { "Log matched" } th scope="col" { "Lag" }
                th scope="col" { "Last heard" }
            } }
            tbody {
                @for m in &report.members {
                    @let health = Health::of(&report, m);
                    tr.member data-node-id=(m.node_id) data-api=(m.api_addr) data-state=(health.text()) {
                        th scope="row" { (m.node_id) @if m.node_id == this_node { " (this node)" } }
                        td { (m.api_addr) }
                        td.role {
                            @if m.leader { strong { "leader" } } @else if m.voter { "voter" } @else { "learner" }
                        }
                        td.state { span class={ "pill " (health.text()) } { (health.text()) } }
                        td { (m.matched_index.map(|i| i.to_string()).unwrap_or_default()) }
                        td { (m.lag.map(|i| i.to_string()).unwrap_or_default()) }
                        td { (m.last_heard_ms.map(|ms| format!("{:.1} s ago", ms as f64 / 1000.0)).unwrap_or_default()) }
                    }
                }
            }
        } }
        p.muted { "This page reloads every " (REFRESH) " seconds." }
    };
    let frame = Frame {
        refresh: Some(REFRESH),
        ..Frame::titled("Cluster")
    };
    layout::page(Some(&visitor), frame, content).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, heard: Option<u64>) -> MemberReport {
        MemberReport {
            node_id: id,
            peer_addr: String::new(),
            api_addr: String::new(),
            voter: true,
            leader: id == 1,
            matched_index: None,
            lag: None,
            last_heard_ms: heard,
        }
    }

    #[test]
    fn the_leaders_view_tells_up_from_down() {
        let members = vec![
            member(1, Some(0)),
            member(2, Some(200)),
            member(3, Some(9_000)),
            member(4, None),
        ];
        let report = StatusReport {
            node_id: 1,
            state: "Leader".into(),
            term: 2,
            leader_id: Some(1),
            last_log_index: None,
            committed_index: None,
            applied_index: None,
            members,
            repair: None,
            scrub: None,
        };
        let health: Vec<_> = report
            .members
            .iter()
            .map(|m| Health::of(&report, m))
            .collect();
        assert_eq!(health, [Health::Up, Health::Up, Health::Down, Health::Down]);
        let follower = StatusReport {
            node_id: 2,
            leader_id: None,
            ..report
        };
        let health: Vec<_> = follower
            .members
            .iter()
            .map(|m| Health::of(&follower, m))
            .collect();
        assert_eq!(
            health,
            [
                Health::Unknown,
                Health::Up,
                Health::Unknown,
                Health::Unknown
            ]
        );
    }
}
