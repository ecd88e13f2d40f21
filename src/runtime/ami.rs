//! A small Asterisk Manager Interface client for the drift audit (log in, run
//! `PJSIPShowContacts`, collect its `ContactList` events, log off) and the session
//! `maintenance` keeps open. The framing and the reading of
//! the answers are pure functions (tested on a transcript); only `fetch_contact_users` does I/O.
//! The secret is sent once in the Login action and never logged.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::NodeConfig;

/// Largest AMI message accepted (a ContactList event is well under 2 KiB).
const MAX_MESSAGE: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum AmiError {
    #[error("AMI connection: {0}")]
    Io(String),
    #[error("AMI did not answer within {0:?}")]
    Timeout(Duration),
    #[error("AMI login refused: {0}")]
    LoginRefused(String),
    #[error("AMI action failed: {0}")]
    ActionFailed(String),
    #[error("AMI protocol error: {0}")]
    Protocol(&'static str),
}

/// Where and as whom to log in. `Debug` hides the secret.
#[derive(Clone)]
pub struct AmiTarget {
    pub addr: SocketAddr,
    pub user: String,
    pub secret: String,
}

impl AmiTarget {
    /// The node's manager, when `ami`, `ami_user` and a secret are all configured.
    pub fn of(n: &NodeConfig) -> Option<AmiTarget> {
        let (Some(addr), Some(user), Some(secret)) = (n.ami, &n.ami_user, &n.ami_secret) else {
            return None;
        };
        Some(AmiTarget {
            addr,
            user: user.clone(),
            secret: secret.0.clone(),
        })
    }
}

impl fmt::Debug for AmiTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmiTarget")
            .field("addr", &self.addr)
            .field("user", &self.user)
            .field("secret", &"***")
            .finish()
    }
}

/// One AMI message: `Key: value` lines up to an empty line. Keys compare case-insensitively.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    pub fields: Vec<(String, String)>,
}

impl Message {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    pub fn is(&self, key: &str, value: &str) -> bool {
        self.get(key).is_some_and(|v| v.eq_ignore_ascii_case(value))
    }
}

/// Takes the first complete message off `buf` (`None` = need more bytes). Accepts CRLF or bare
/// LF line ends; a line without `:` is kept with an empty value (AMI's free-text output).
pub fn take_message(buf: &mut Vec<u8>) -> Result<Option<Message>, AmiError> {
    let end = find_blank_line(buf);
    let Some((body_end, next)) = end else {
        if buf.len() > MAX_MESSAGE {
            return Err(AmiError::Protocol("message too large"));
        }
        return Ok(None);
    };
    if body_end > MAX_MESSAGE {
        return Err(AmiError::Protocol("message too large"));
    }
    let text = String::from_utf8_lossy(&buf[..body_end]).into_owned();
    buf.drain(..next);
    let fields = text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.is_empty())
        .map(|l| match l.split_once(':') {
            Some((k, v)) => (k.trim().to_string(), v.trim().to_string()),
            None => (l.trim().to_string(), String::new()),
        })
        .collect();
    Ok(Some(Message { fields }))
}

/// `(end of the message, start of the next)` at the first blank line.
fn find_blank_line(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i < buf.len() {
        if buf[i] == b'\n' {
            // "\n\n" or "\n\r\n"
            if buf.get(i + 1) == Some(&b'\n') {
                return Some((i, i + 2));
            }
            if buf.get(i + 1) == Some(&b'\r') && buf.get(i + 2) == Some(&b'\n') {
                return Some((i, i + 3));
            }
        }
        i += 1;
    }
    None
}

/// The user of a contact URI that points at `contact_host` (`sip:<user>@<contact_host>`, any
/// URI parameters ignored); `None` for contacts that are not ours.
pub fn our_contact_user(uri: &str, contact_host: &str) -> Option<String> {
    let uri = uri.trim().trim_start_matches('<').trim_end_matches('>');
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("SIP:"))?;
    let rest = rest.split([';', '?', '>']).next().unwrap_or(rest);
    let (user, host) = rest.rsplit_once('@')?;
    (!user.is_empty() && host.eq_ignore_ascii_case(contact_host)).then(|| user.to_string())
}

/// Reads the answer to `PJSIPShowContacts` (ActionID `id`) message by message.
#[derive(Debug, Default)]
pub struct ContactsCollector {
    pub users: HashSet<String>,
    /// `(user, contact object id)` of every contact of ours (the id is the astdb key).
    pub ids: Vec<(String, String)>,
    /// Every contact listed, ours or not.
    pub listed: usize,
    pub done: bool,
}

impl ContactsCollector {
    /// Feeds one message; `Err` when the action failed.
    pub fn feed(&mut self, m: &Message, id: &str, contact_host: &str) -> Result<(), AmiError> {
        if m.get("ActionID") != Some(id) {
            return Ok(()); // unsolicited event or another action
        }
        if m.is("Response", "Error") {
            let msg = m.get("Message").unwrap_or("");
            // An empty contact table is reported as an error.
            if msg.to_ascii_lowercase().contains("no contacts found") {
                self.done = true;
                return Ok(());
            }
            return Err(AmiError::ActionFailed(msg.to_string()));
        }
        if m.is("Event", "ContactList") {
            self.listed += 1;
            if let Some(u) = m.get("Uri").and_then(|u| our_contact_user(u, contact_host)) {
                if let Some(id) = m.get("ObjectName") {
                    self.ids.push((u.clone(), id.to_string()));
                }
                self.users.insert(u);
            }
        } else if m.is("Event", "ContactListComplete") {
            self.done = true;
        }
        Ok(())
    }
}

pub(super) fn action(lines: &[(&str, &str)]) -> Vec<u8> {
    let mut s = String::new();
    for (k, v) in lines {
        s.push_str(k);
        s.push_str(": ");
        s.push_str(v);
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    s.into_bytes()
}

pub(super) struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub(super) async fn next(&mut self) -> Result<Message, AmiError> {
        loop {
            if let Some(m) = take_message(&mut self.buf)? {
                return Ok(m);
            }
            self.fill("closed by Asterisk").await?;
        }
    }

    /// Appends what the socket has to `buf`; EOF is an error saying `closed`.
    async fn fill(&mut self, closed: &str) -> Result<(), AmiError> {
        let mut chunk = [0u8; 8192];
        let n = self
            .stream
            .read(&mut chunk)
            .await
            .map_err(|e| AmiError::Io(e.to_string()))?;
        if n == 0 {
            return Err(AmiError::Io(closed.into()));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    pub(super) async fn send(&mut self, bytes: &[u8]) -> Result<(), AmiError> {
        self.stream
            .write_all(bytes)
            .await
            .map_err(|e| AmiError::Io(e.to_string()))
    }
}

/// Logs in and lists the users whose contact on the node points at `contact_host`.
pub async fn fetch_contact_users(
    target: &AmiTarget,
    contact_host: &str,
    timeout: Duration,
) -> Result<HashSet<String>, AmiError> {
    tokio::time::timeout(timeout, fetch_inner(target, contact_host))
        .await
        .map_err(|_| AmiError::Timeout(timeout))?
}

/// Deletes the contacts of `user` (every user: `None`) that point at `contact_host` straight
/// from the node's contact store (AMI `DBDel` of `registrar/contact/<id>`; needs a `system`
/// write permission). For a user whose credential is gone (the node can no longer authenticate
/// regmirror's unregister, so the contact would otherwise linger until it expires), and for a
/// node leaving the farm. Returns how many were deleted.
pub async fn remove_contacts(
    target: &AmiTarget,
    contact_host: &str,
    user: Option<&str>,
    timeout: Duration,
) -> Result<usize, AmiError> {
    tokio::time::timeout(timeout, async {
        let mut c = login(target, "off").await?;
        let col = list_contacts(&mut c, contact_host).await?;
        let mut removed = 0;
        let ours = col.ids.iter().filter(|(u, _)| user.is_none_or(|w| u == w));
        for (i, (_, id)) in ours.enumerate() {
            let action_id = format!("rm-del-{i}");
            c.send(&action(&[
                ("Action", "DBDel"),
                ("ActionID", &action_id),
                ("Family", "registrar/contact"),
                ("Key", id),
            ]))
            .await?;
            loop {
                let m = c.next().await?;
                if m.get("ActionID") != Some(action_id.as_str()) {
                    continue;
                }
                if m.is("Response", "Success") {
                    removed += 1;
                    break;
                }
                // Gone already (the contact expired or another instance deleted it).
                let msg = m.get("Message").unwrap_or("");
                if msg.to_ascii_lowercase().contains("not found") {
                    break;
                }
                return Err(AmiError::ActionFailed(msg.to_string()));
            }
        }
        logoff(&mut c).await;
        Ok(removed)
    })
    .await
    .map_err(|_| AmiError::Timeout(timeout))?
}

/// Switches `endpoint`'s maintenance mode on the node (`PJSIPSetMaintenance`, Asterisk 20.20,
/// 22.10, 23.4; `write = system`). Switching it to the state it is in changes nothing.
pub async fn set_maintenance(
    target: &AmiTarget,
    endpoint: &str,
    on: bool,
    timeout: Duration,
) -> Result<(), AmiError> {
    let state = if on { "on" } else { "off" };
    let fields = [
        ("Action", "PJSIPSetMaintenance"),
        ("Endpoint", endpoint),
        ("State", state),
    ];
    one_request(target, &fields, timeout).await.map(drop)
}

/// Channels on the node now (`CoreShowChannels`): two or so per call in progress.
pub async fn channel_count(target: &AmiTarget, timeout: Duration) -> Result<usize, AmiError> {
    let answer = one_request(target, &[("Action", "CoreShowChannels")], timeout).await?;
    Ok(answer
        .iter()
        .filter(|m| m.is("Event", "CoreShowChannel"))
        .count())
}

/// Logs in, runs one action, logs off: the action's response and, for a listing, its events up
/// to the `...Complete` one. A `Response: Error` is `ActionFailed` with Asterisk's message.
pub async fn one_request(
    target: &AmiTarget,
    fields: &[(&str, &str)],
    timeout: Duration,
) -> Result<Vec<Message>, AmiError> {
    const ID: &str = "rm-request";
    tokio::time::timeout(timeout, async {
        let mut c = login(target, "off").await?;
        let mut lines = fields.to_vec();
        lines.push(("ActionID", ID));
        c.send(&action(&lines)).await?;
        let (mut answer, mut listing) = (Vec::new(), false);
        loop {
            let m = c.next().await?;
            if m.get("ActionID") != Some(ID) {
                continue;
            }
            if m.is("Response", "Error") {
                let why = m.get("Message").unwrap_or("refused").to_string();
                return Err(AmiError::ActionFailed(why));
            }
            let list = m.get("EventList").map(str::to_ascii_lowercase);
            answer.push(m);
            match list.as_deref() {
                Some("start") => listing = true,
                Some("complete") => break,
                _ if !listing => break,
                _ => {}
            }
        }
        logoff(&mut c).await;
        Ok(answer)
    })
    .await
    .map_err(|_| AmiError::Timeout(timeout))?
}

async fn fetch_inner(target: &AmiTarget, contact_host: &str) -> Result<HashSet<String>, AmiError> {
    let mut c = login(target, "off").await?;
    let col = list_contacts(&mut c, contact_host).await?;
    logoff(&mut c).await;
    Ok(col.users)
}

async fn list_contacts(c: &mut Conn, contact_host: &str) -> Result<ContactsCollector, AmiError> {
    c.send(&action(&[
        ("Action", "PJSIPShowContacts"),
        ("ActionID", "rm-contacts"),
    ]))
    .await?;
    let mut col = ContactsCollector::default();
    while !col.done {
        let m = c.next().await?;
        col.feed(&m, "rm-contacts", contact_host)?;
    }
    Ok(col)
}

async fn logoff(c: &mut Conn) {
    // Best effort: Asterisk closes the session on its side anyway.
    let _ = c
        .send(&action(&[("Action", "Logoff"), ("ActionID", "rm-logoff")]))
        .await;
}

/// Logs in, asking for the event classes in `events` (`off`: none).
pub(super) async fn login(target: &AmiTarget, events: &str) -> Result<Conn, AmiError> {
    let stream = TcpStream::connect(target.addr)
        .await
        .map_err(|e| AmiError::Io(e.to_string()))?;
    let mut c = Conn {
        stream,
        buf: Vec::new(),
    };
    // The banner is one line ("Asterisk Call Manager/x.y.z") without a blank line after it.
    loop {
        if let Some(pos) = c.buf.iter().position(|&b| b == b'\n') {
            if !c.buf.starts_with(b"Asterisk Call Manager") {
                return Err(AmiError::Protocol("not an Asterisk manager banner"));
            }
            c.buf.drain(..=pos);
            break;
        }
        if c.buf.len() > 1024 {
            return Err(AmiError::Protocol("no banner"));
        }
        c.fill("closed before the banner").await?;
    }
    c.send(&action(&[
        ("Action", "Login"),
        ("ActionID", "rm-login"),
        ("Username", &target.user),
        ("Secret", &target.secret),
        ("Events", events),
    ]))
    .await?;
    loop {
        let m = c.next().await?;
        if m.get("ActionID") != Some("rm-login") {
            continue;
        }
        if m.is("Response", "Success") {
            break;
        }
        return Err(AmiError::LoginRefused(
            m.get("Message").unwrap_or("no reason given").to_string(),
        ));
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The server side of a session in the format Asterisk 22's manager writes (CRLF lines, one
    /// blank line per message; field set of `ContactList` from res_pjsip's documentation).
    const TRANSCRIPT: &str = "Response: Success\r\n\
ActionID: rm-login\r\n\
Message: Authentication accepted\r\n\
\r\n\
Event: FullyBooted\r\n\
Privilege: system,all\r\n\
Uptime: 120\r\n\
LastReload: 120\r\n\
Status: Fully Booted\r\n\
\r\n\
Response: Success\r\n\
ActionID: rm-contacts\r\n\
EventList: start\r\n\
Message: A listing of Contacts follows, presence will follow as they are received\r\n\
\r\n\
Event: ContactList\r\n\
ActionID: rm-contacts\r\n\
ObjectType: contact\r\n\
ObjectName: 1001;@5ab1c2a83f3c1fd21f0c3a5fbd7e4e4a\r\n\
ViaAddr: 10.77.0.40\r\n\
ViaPort: 5070\r\n\
QualifyTimeout: 3.000000\r\n\
CallId: 1a2b3c4d-0-0-0\r\n\
RegServer: ast1\r\n\
PruneOnBoot: false\r\n\
Path: \r\n\
Endpoint: 1001\r\n\
AuthenticateQualify: false\r\n\
Uri: sip:1001@10.77.0.20:5060\r\n\
QualifyFrequency: 0\r\n\
UserAgent: regmirror/0.1.0\r\n\
ExpirationTime: 1732300600\r\n\
OutboundProxy: \r\n\
Status: Unknown\r\n\
RoundtripUsec: N/A\r\n\
\r\n\
Event: ContactList\r\n\
ActionID: rm-contacts\r\n\
ObjectType: contact\r\n\
ObjectName: 1002;@0c1d0e1f\r\n\
Endpoint: 1002\r\n\
Uri: sip:1002@192.0.2.55:5062;transport=udp\r\n\
Status: Unknown\r\n\
\r\n\
Event: ContactList\r\n\
ActionID: rm-contacts\r\n\
ObjectType: contact\r\n\
ObjectName: 1003;@9f8e7d6c\r\n\
Endpoint: 1003\r\n\
Uri: sip:1003@10.77.0.20:5060;ob\r\n\
Status: Unknown\r\n\
\r\n\
Event: ContactListComplete\r\n\
ActionID: rm-contacts\r\n\
EventList: Complete\r\n\
ListItems: 3\r\n\
\r\n";

    fn feed_all(bytes: &[u8], chunk: usize) -> (Vec<Message>, ContactsCollector) {
        let mut buf = Vec::new();
        let mut msgs = Vec::new();
        let mut col = ContactsCollector::default();
        for part in bytes.chunks(chunk) {
            buf.extend_from_slice(part);
            while let Some(m) = take_message(&mut buf).unwrap() {
                col.feed(&m, "rm-contacts", "10.77.0.20:5060").unwrap();
                msgs.push(m);
            }
        }
        assert!(buf.is_empty());
        (msgs, col)
    }

    #[test]
    fn transcript_gives_our_contacts_only_whatever_the_read_sizes() {
        for chunk in [1, 7, 64, 4096] {
            let (msgs, col) = feed_all(TRANSCRIPT.as_bytes(), chunk);
            assert_eq!(msgs.len(), 7);
            assert_eq!(msgs[0].get("message"), Some("Authentication accepted"));
            assert_eq!(msgs[3].get("Path"), Some(""));
            assert!(col.done);
            assert_eq!(col.listed, 3);
            let want: HashSet<String> = ["1001", "1003"].iter().map(|s| s.to_string()).collect();
            assert_eq!(col.users, want);
        }
    }

    #[test]
    fn bare_lf_and_empty_table_and_errors() {
        let mut buf =
            b"Response: Error\nActionID: rm-contacts\nMessage: No Contacts found\n\n".to_vec();
        let m = take_message(&mut buf).unwrap().unwrap();
        let mut col = ContactsCollector::default();
        col.feed(&m, "rm-contacts", "h").unwrap();
        assert!(col.done && col.users.is_empty());
        let mut buf =
            b"Response: Error\r\nActionID: rm-contacts\r\nMessage: Permission denied\r\n\r\n"
                .to_vec();
        let m = take_message(&mut buf).unwrap().unwrap();
        let e = ContactsCollector::default()
            .feed(&m, "rm-contacts", "h")
            .unwrap_err();
        assert!(e.to_string().contains("Permission denied"));
        // Incomplete, then oversized input.
        let mut buf = b"Event: ContactList\r\n".to_vec();
        assert!(take_message(&mut buf).unwrap().is_none());
        let mut big = vec![b'a'; MAX_MESSAGE + 10];
        assert!(take_message(&mut big).is_err());
    }

    #[test]
    fn contact_uri_matching() {
        let h = "10.77.0.20:5060";
        assert_eq!(
            our_contact_user("sip:1001@10.77.0.20:5060", h).as_deref(),
            Some("1001")
        );
        assert_eq!(
            our_contact_user("<sip:1001@10.77.0.20:5060>", h).as_deref(),
            Some("1001")
        );
        assert_eq!(our_contact_user("sip:1001@10.77.0.20", h), None);
        assert_eq!(our_contact_user("sip:1001@10.77.0.21:5060", h), None);
        assert_eq!(our_contact_user("sips:1001@10.77.0.20:5060", h), None);
        assert_eq!(our_contact_user("sip:@10.77.0.20:5060", h), None);
        assert_eq!(our_contact_user("garbage", h), None);
    }

    #[test]
    fn secret_not_in_debug() {
        let t = AmiTarget {
            addr: "10.77.0.31:5038".parse().unwrap(),
            user: "regmirror".into(),
            secret: "s3cr3t-ami".into(),
        };
        assert!(!format!("{t:?}").contains("s3cr3t-ami"));
    }

    async fn listen() -> (tokio::net::TcpListener, SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (listener, addr)
    }

    /// The first connection, greeted with Asterisk's banner.
    async fn accept_greeted(listener: &tokio::net::TcpListener) -> tokio::net::TcpStream {
        let (mut s, _) = listener.accept().await.unwrap();
        s.write_all(b"Asterisk Call Manager/9.0.0\r\n")
            .await
            .unwrap();
        s
    }

    fn target(addr: SocketAddr) -> AmiTarget {
        AmiTarget {
            addr,
            user: "regmirror".into(),
            secret: "pw".into(),
        }
    }

    /// The client against a scripted AMI server on loopback: banner, login, list, logoff.
    #[tokio::test]
    async fn client_logs_in_and_lists() {
        let (listener, addr) = listen().await;
        let server = tokio::spawn(async move {
            let mut s = accept_greeted(&listener).await;
            let mut got = Vec::new();
            let mut chunk = [0u8; 1024];
            // Login, then PJSIPShowContacts.
            while !String::from_utf8_lossy(&got).contains("PJSIPShowContacts") {
                let n = s.read(&mut chunk).await.unwrap();
                got.extend_from_slice(&chunk[..n]);
                if String::from_utf8_lossy(&got).contains("Events: off\r\n\r\n")
                    && !String::from_utf8_lossy(&got).contains("answered")
                {
                    s.write_all(
                        TRANSCRIPT
                            .split("Event: FullyBooted")
                            .next()
                            .unwrap()
                            .as_bytes(),
                    )
                    .await
                    .unwrap();
                    got.extend_from_slice(b"answered");
                }
            }
            let rest = &TRANSCRIPT[TRANSCRIPT.find("Event: FullyBooted").unwrap()..];
            s.write_all(rest.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&got).into_owned()
        });
        let t = target(addr);
        let users = fetch_contact_users(&t, "10.77.0.20:5060", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(users.len(), 2);
        let seen = server.await.unwrap();
        assert!(seen.contains(
            "Action: Login\r\nActionID: rm-login\r\nUsername: regmirror\r\nSecret: pw\r\n"
        ));
    }

    /// `one_request` collects a listing up to its Complete event, skips other sessions'
    /// messages, and reports a refused action with Asterisk's message.
    #[tokio::test]
    async fn one_request_collects_a_listing_and_reports_errors() {
        let (listener, addr) = listen().await;
        let server = tokio::spawn(async move {
            for answer in [
                "Response: Success\r\nActionID: rm-request\r\nEventList: start\r\n\r\n\
                 Event: CoreShowChannel\r\nActionID: rm-request\r\nChannel: PJSIP/kamailio-1\r\n\r\n\
                 Event: Newchannel\r\nChannel: PJSIP/other\r\n\r\n\
                 Event: CoreShowChannel\r\nActionID: rm-request\r\nChannel: PJSIP/kamailio-2\r\n\r\n\
                 Event: CoreShowChannelsComplete\r\nActionID: rm-request\r\nEventList: Complete\r\n\r\n",
                "Response: Error\r\nActionID: rm-request\r\nMessage: Endpoint 'x' not found\r\n\r\n",
            ] {
                let mut s = accept_greeted(&listener).await;
                let mut got = Vec::new();
                let mut chunk = [0u8; 1024];
                while !String::from_utf8_lossy(&got).contains("ActionID: rm-request") {
                    let n = s.read(&mut chunk).await.unwrap();
                    got.extend_from_slice(&chunk[..n]);
                    if String::from_utf8_lossy(&got).contains("ActionID: rm-login\r\n") {
                        s.write_all(b"Response: Success\r\nActionID: rm-login\r\n\r\n")
                            .await
                            .unwrap();
                        got.clear();
                    }
                }
                s.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        let t = target(addr);
        assert_eq!(channel_count(&t, Duration::from_secs(5)).await.unwrap(), 2);
        let e = set_maintenance(&t, "x", true, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("Endpoint 'x' not found"), "{e}");
        server.await.unwrap();
    }

    /// `remove_contacts` lists, then deletes only the named user's contacts of ours by id.
    #[tokio::test]
    async fn remove_contacts_deletes_the_users_contact_by_id() {
        let (listener, addr) = listen().await;
        let server = tokio::spawn(async move {
            let mut s = accept_greeted(&listener).await;
            let mut inbox = Vec::new();
            let mut seen = String::new();
            let mut chunk = [0u8; 1024];
            loop {
                let n = s.read(&mut chunk).await.unwrap();
                if n == 0 {
                    return seen;
                }
                inbox.extend_from_slice(&chunk[..n]);
                while let Some(m) = take_message(&mut inbox).unwrap() {
                    let id = m.get("ActionID").unwrap_or("").to_string();
                    let reply = match m.get("Action").unwrap_or("") {
                        "Login" => {
                            TRANSCRIPT[..TRANSCRIPT.find("Event: FullyBooted").unwrap()].to_string()
                        }
                        "PJSIPShowContacts" => TRANSCRIPT[TRANSCRIPT
                            .find("Response: Success\r\nActionID: rm-contacts")
                            .unwrap()..]
                            .to_string(),
                        "DBDel" => {
                            seen.push_str(&format!(
                                "DBDel {} {}\n",
                                m.get("Family").unwrap_or(""),
                                m.get("Key").unwrap_or("")
                            ));
                            format!("Response: Success\r\nActionID: {id}\r\nMessage: Key deleted successfully\r\n\r\n")
                        }
                        _ => return seen,
                    };
                    s.write_all(reply.as_bytes()).await.unwrap();
                }
            }
        });
        let t = target(addr);
        let n = remove_contacts(&t, "10.77.0.20:5060", Some("1003"), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(n, 1);
        let seen = server.await.unwrap();
        // 1002's contact is not ours (another host); 1001 is ours but not asked for.
        assert_eq!(seen, "DBDel registrar/contact 1003;@9f8e7d6c\n");
    }
}
