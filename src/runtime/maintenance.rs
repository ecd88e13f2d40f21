//! Asterisk's maintenance mode (`res_pjsip_maintenance`, Asterisk 20.20, 22.10, 23.4), followed
//! on every node that has `ami` configured, whoever sets it: an operator on the node's console
//! (`pjsip set maintenance on kamailio`), another AMI client, a drain. One manager session per
//! node: `PJSIPShowMaintenance` gives the endpoints in maintenance at login, then the
//! `PJSIPMaintenanceStatus` events (class `system`) follow every change. The reading of the
//! messages is `Tracker`, pure and tested on a transcript; `spawn_watchers` does the I/O.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::ami::{action, login, one_request, AmiError, AmiTarget, Message};
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

/// One watcher per node that has `ami` configured; each sends an `Update` on every change, and
/// `endpoints: None` while its session is down.
pub fn spawn_watchers(nodes: &[NodeConfig], tx: &mpsc::Sender<Update>, metrics: &Arc<Metrics>) {
    for n in nodes {
        let Some(target) = AmiTarget::of(n) else {
            continue;
        };
        let (name, tx, metrics) = (n.name.clone(), tx.clone(), metrics.clone());
        tokio::spawn(async move {
            let mut last_error = String::new();
            loop {
                let e = watch(&target, &name, &tx).await;
                if tx.is_closed() {
                    return;
                }
                Metrics::inc(&metrics.ami_errors);
                // Once per kind of failure, not every RECONNECT_AFTER.
                let text = e.to_string();
                if text != last_error {
                    tracing::warn!(node = %name, ami = %target.addr, error = %text,
                        "maintenance mode of the node not followed; retrying");
                    last_error = text;
                }
                let gone = Update {
                    node: name.clone(),
                    endpoints: None,
                };
                if tx.send(gone).await.is_err() {
                    return;
                }
                tokio::time::sleep(RECONNECT_AFTER).await;
            }
        });
    }
}

/// One session: log in for `system` events, list, then follow until the session ends.
async fn watch(target: &AmiTarget, node: &str, tx: &mpsc::Sender<Update>) -> AmiError {
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
        match tracker.feed(&m) {
            Ok(false) => {}
            Ok(true) => {
                let u = Update {
                    node: node.to_string(),
                    endpoints: tracker.endpoints().cloned(),
                };
                if tx.send(u).await.is_err() {
                    return AmiError::Io("regmirror is shutting down".into());
                }
            }
            Err(e) => return e,
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

    #[test]
    fn a_refused_listing_is_an_error_naming_why() {
        let mut t = Tracker::default();
        let mut buf = b"Response: Error\r\nActionID: rm-maintenance\r\nMessage: Invalid/unknown command: PJSIPShowMaintenance\r\n\r\n".to_vec();
        let m = take_message(&mut buf).unwrap().unwrap();
        let e = t.feed(&m).unwrap_err().to_string();
        assert!(e.contains("Invalid/unknown command"), "{e}");
    }
}
