//! What each node's manager reports as it happens, on one AMI session per node that has `ami`
//! configured (class `system` events):
//! - Asterisk's maintenance mode (`res_pjsip_maintenance`, Asterisk 20.20, 22.10, 23.4), whoever
//!   sets it: an operator on the node's console (`pjsip set maintenance on kamailio`), another
//!   AMI client, a drain. `PJSIPShowMaintenance` gives the endpoints in maintenance at login,
//!   then `PJSIPMaintenanceStatus` events follow every change.
//! - Contacts that go away (`PeerStatus` `Unreachable`: an endpoint has no contact left; and
//!   `ContactStatus` where AORs qualify), so a lost contact is registered again when it
//!   happens and the full listing of the AMI audit can be rare: the audit's cost grows with
//!   changes, not with contacts x nodes x periods.
//!
//! The reading of the messages is `Tracker` and `contact_change`, pure and tested on
//! transcripts; `spawn_watchers` does the I/O.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::ami::{action, login, one_request, our_contact_user, AmiError, AmiTarget, Message};
use super::metrics::Metrics;
use crate::config::NodeConfig;

const LIST_ID: &str = "rm-maintenance";
/// A session that said nothing this long is pinged (a dead one fails the write and reconnects).
const PING_EVERY: Duration = Duration::from_secs(30);
/// The wait before logging in again after the session ended.
const RECONNECT_AFTER: Duration = Duration::from_secs(10);

/// What one node's manager says is in maintenance (`None`: not known now, e.g. AMI down).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub node: String,
    pub endpoints: Option<BTreeSet<String>>,
}

/// A change of one of regmirror's contacts on a node: `present` false when the node removed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactChange {
    pub node: String,
    pub user: String,
    pub present: bool,
}

/// What a node's manager session reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    Maintenance(Update),
    Contact(ContactChange),
}

/// The user and presence of a contact change a node reports; `None` for any other message.
/// - `PeerStatus` `Unreachable` of a PJSIP endpoint: the endpoint has no contact left (each
///   user's endpoint and AOR are named after it, and only regmirror registers on the nodes): if
///   regmirror holds a binding there, its contact is gone. `Reachable` says nothing about whose
///   contact appeared, so it is left to the listing.
/// - `ContactStatus` (Asterisk raises it for AORs that qualify): about a contact of ours
///   (pointing at `contact_host`), removed or there.
pub fn contact_change(m: &Message, contact_host: &str) -> Option<(String, bool)> {
    if m.is("Event", "PeerStatus") {
        if !m.is("PeerStatus", "Unreachable") {
            return None;
        }
        let peer = m.get("Peer")?;
        let endpoint = peer
            .strip_prefix("PJSIP/")
            .or_else(|| peer.strip_prefix("pjsip/"))?;
        return (!endpoint.is_empty()).then(|| (endpoint.to_string(), false));
    }
    if !m.is("Event", "ContactStatus") {
        return None;
    }
    let user = our_contact_user(m.get("URI")?, contact_host)?;
    Some((user, !m.is("ContactStatus", "Removed")))
}

/// The endpoints in maintenance on one node, from the listing at login and the events after it.
#[derive(Debug, Default)]
pub struct Tracker {
    endpoints: BTreeSet<String>,
    /// The listing at login is complete: `endpoints` is the node's state.
    listed: bool,
}

impl Tracker {
    /// Takes one message; true when what is known changed (the listing completed, or an
    /// endpoint entered or left maintenance since). A refused listing is an error: the node's
    /// Asterisk has no `res_pjsip_maintenance`, or the AMI account may not list it.
    pub fn feed(&mut self, m: &Message) -> Result<bool, AmiError> {
        let ours = m.get("ActionID") == Some(LIST_ID);
        if ours
            && m.get("Response")
                .is_some_and(|r| r.eq_ignore_ascii_case("error"))
        {
            let why = m.get("Message").unwrap_or("refused").to_string();
            return Err(AmiError::ActionFailed(format!(
                "PJSIPShowMaintenance: {why}"
            )));
        }
        let event = m.get("Event").unwrap_or("");
        if event.eq_ignore_ascii_case("PJSIPMaintenanceStatusComplete") && ours {
            let changed = !self.listed;
            self.listed = true;
            return Ok(changed);
        }
        if !event.eq_ignore_ascii_case("PJSIPMaintenanceStatus") {
            return Ok(false);
        }
        let Some(endpoint) = m.get("Endpoint").filter(|e| !e.is_empty()) else {
            return Ok(false);
        };
        let enabled = m
            .get("Status")
            .is_some_and(|s| s.eq_ignore_ascii_case("enabled"));
        let changed = if enabled {
            self.endpoints.insert(endpoint.to_string())
        } else {
            self.endpoints.remove(endpoint)
        };
        // A change before the listing completed shows with it.
        Ok(changed && self.listed)
    }

    /// The endpoints in maintenance, once the listing at login is complete.
    pub fn endpoints(&self) -> Option<&BTreeSet<String>> {
        self.listed.then_some(&self.endpoints)
    }
}

/// The endpoints in maintenance on the node now (`PJSIPShowMaintenance`, one session).
pub async fn endpoints_in_maintenance(
    target: &AmiTarget,
    timeout: Duration,
) -> Result<BTreeSet<String>, AmiError> {
    let answer = one_request(target, &[("Action", "PJSIPShowMaintenance")], timeout).await?;
    Ok(answer
        .iter()
        .filter(|m| m.is("Event", "PJSIPMaintenanceStatus") && m.is("Status", "enabled"))
        .filter_map(|m| m.get("Endpoint"))
        .map(String::from)
        .collect())
}

/// One watcher per node that has `ami` configured; each reports every change of maintenance
/// (`endpoints: None` while its session is down) and of our contacts (pointing at
/// `contact_host`).
pub fn spawn_watchers(
    nodes: &[NodeConfig],
    contact_host: &str,
    tx: &mpsc::Sender<Report>,
    metrics: &Arc<Metrics>,
) {
    for n in nodes {
        let Some(target) = AmiTarget::of(n) else {
            continue;
        };
        let (name, tx, metrics) = (n.name.clone(), tx.clone(), metrics.clone());
        let contact_host = contact_host.to_string();
        tokio::spawn(async move {
            let mut last_error = String::new();
            loop {
                let e = watch(&target, &name, &contact_host, &tx).await;
                if tx.is_closed() {
                    return;
                }
                Metrics::inc(&metrics.ami_errors);
                // Once per kind of failure, not every RECONNECT_AFTER.
                let text = e.to_string();
                if text != last_error {
                    tracing::warn!(node = %name, ami = %target.addr, error = %text,
                        "maintenance mode and contact changes of the node not followed; retrying");
                    last_error = text;
                }
                let gone = Report::Maintenance(Update {
                    node: name.clone(),
                    endpoints: None,
                });
                if tx.send(gone).await.is_err() {
                    return;
                }
                tokio::time::sleep(RECONNECT_AFTER).await;
            }
        });
    }
}

/// One session: log in for `system` events, list, then follow until the session ends.
async fn watch(
    target: &AmiTarget,
    node: &str,
    contact_host: &str,
    tx: &mpsc::Sender<Report>,
) -> AmiError {
    let mut c = match login(target, "system").await {
        Ok(c) => c,
        Err(e) => return e,
    };
    let list = action(&[("Action", "PJSIPShowMaintenance"), ("ActionID", LIST_ID)]);
    if let Err(e) = c.send(&list).await {
        return e;
    }
    let mut tracker = Tracker::default();
    loop {
        let m = match tokio::time::timeout(PING_EVERY, c.next()).await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => return e,
            Err(_) => {
                let ping = action(&[("Action", "Ping"), ("ActionID", "rm-ping")]);
                if let Err(e) = c.send(&ping).await {
                    return e;
                }
                continue;
            }
        };
        let report = if let Some((user, present)) = contact_change(&m, contact_host) {
            Report::Contact(ContactChange {
                node: node.to_string(),
                user,
                present,
            })
        } else {
            match tracker.feed(&m) {
                Ok(false) => continue,
                Ok(true) => Report::Maintenance(Update {
                    node: node.to_string(),
                    endpoints: tracker.endpoints().cloned(),
                }),
                Err(e) => return e,
            }
        };
        if tx.send(report).await.is_err() {
            return AmiError::Io("regmirror is shutting down".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::ami::take_message;
    use super::*;

    /// What Asterisk 22.10's manager writes: the listing of `PJSIPShowMaintenance` (one
    /// `PJSIPMaintenanceStatus` per endpoint in maintenance, then the Complete event), then
    /// events as an operator switches maintenance on and off at the console.
    const TRANSCRIPT: &str = "Response: Success\r\nActionID: rm-maintenance\r\nEventList: start\r\n\
Message: Maintenance status will follow\r\n\r\n\
Event: PJSIPMaintenanceStatus\r\nActionID: rm-maintenance\r\nEndpoint: 1009\r\nStatus: enabled\r\n\r\n\
Event: PJSIPMaintenanceStatusComplete\r\nActionID: rm-maintenance\r\nEventList: Complete\r\nListItems: 1\r\n\r\n\
Event: PJSIPMaintenanceStatus\r\nPrivilege: system,all\r\nEndpoint: kamailio\r\nStatus: enabled\r\n\r\n\
Event: PJSIPMaintenanceStatus\r\nPrivilege: system,all\r\nEndpoint: kamailio\r\nStatus: enabled\r\n\r\n\
Event: FullyBooted\r\nPrivilege: system,all\r\nStatus: Fully Booted\r\n\r\n\
Event: PJSIPMaintenanceStatus\r\nPrivilege: system,all\r\nEndpoint: 1009\r\nStatus: disabled\r\n\r\n";

    fn replay(t: &mut Tracker, text: &str) -> Vec<Option<Vec<String>>> {
        let mut buf = text.as_bytes().to_vec();
        let mut seen = Vec::new();
        while let Some(m) = take_message(&mut buf).unwrap() {
            if t.feed(&m).unwrap() {
                seen.push(t.endpoints().map(|e| e.iter().cloned().collect()));
            }
        }
        seen
    }

    #[test]
    fn the_listing_then_every_change_and_nothing_else() {
        let mut t = Tracker::default();
        assert_eq!(t.endpoints(), None);
        let v = |s: &[&str]| Some(s.iter().map(|e| e.to_string()).collect::<Vec<_>>());
        assert_eq!(
            replay(&mut t, TRANSCRIPT),
            vec![v(&["1009"]), v(&["1009", "kamailio"]), v(&["kamailio"])]
        );
    }

    #[test]
    fn a_change_during_the_listing_shows_with_it() {
        let mut t = Tracker::default();
        let text = "Event: PJSIPMaintenanceStatus\r\nEndpoint: kamailio\r\nStatus: enabled\r\n\r\n\
Event: PJSIPMaintenanceStatusComplete\r\nActionID: rm-maintenance\r\n\r\n";
        assert_eq!(
            replay(&mut t, text),
            vec![Some(vec!["kamailio".to_string()])]
        );
    }

    /// What Asterisk 22.10's manager writes (`PeerStatus` seen on the compose nodes as contacts
    /// come and go; `ContactStatus` as `manager show event ContactStatus` gives it): an
    /// endpoint without contacts, and ours by the contact's host.
    #[test]
    fn contact_events_of_our_contacts_only() {
        let text = "Event: PeerStatus\r\nPrivilege: system,all\r\nChannelType: PJSIP\r\n\
Peer: PJSIP/891750003\r\nPeerStatus: Unreachable\r\n\r\n\
Event: PeerStatus\r\nPrivilege: system,all\r\nChannelType: PJSIP\r\n\
Peer: PJSIP/891750004\r\nPeerStatus: Reachable\r\n\r\n\
Event: ContactStatus\r\nPrivilege: system,all\r\n\
URI: sip:1001@10.77.0.20:5060\r\nContactStatus: Removed\r\nAOR: 1001\r\nEndpointName: 1001\r\n\r\n\
Event: ContactStatus\r\nPrivilege: system,all\r\n\
URI: sip:1002@10.77.0.20:5060;transport=udp\r\nContactStatus: Created\r\nAOR: 1002\r\nEndpointName: 1002\r\n\r\n\
Event: ContactStatus\r\nURI: sip:1003@10.77.0.20:5060\r\nContactStatus: Unqualified\r\n\r\n\
Event: ContactStatus\r\nURI: sip:1004@192.0.2.9:5060\r\nContactStatus: Removed\r\n\r\n\
Event: PJSIPMaintenanceStatus\r\nEndpoint: kamailio\r\nStatus: enabled\r\n\r\n";
        let mut buf = text.as_bytes().to_vec();
        let mut seen = Vec::new();
        while let Some(m) = take_message(&mut buf).unwrap() {
            seen.push(contact_change(&m, "10.77.0.20:5060"));
        }
        let ours = |u: &str, present| Some((u.to_string(), present));
        assert_eq!(
            seen,
            [
                ours("891750003", false),
                None,
                ours("1001", false),
                ours("1002", true),
                ours("1003", true),
                None,
                None
            ]
        );
    }

    #[test]
    fn a_refused_listing_is_an_error_naming_why() {
        let mut t = Tracker::default();
        let mut buf = b"Response: Error\r\nActionID: rm-maintenance\r\nMessage: Invalid/unknown command: PJSIPShowMaintenance\r\n\r\n".to_vec();
        let m = take_message(&mut buf).unwrap().unwrap();
        let e = t.feed(&m).unwrap_err().to_string();
        assert!(e.contains("Invalid/unknown command"), "{e}");
    }
}
