//! A minimal SIP phone for tests: REGISTER over UDP with digest authentication (RFC 2617/7616
//! via the crate's own `core::digest`), retransmitting like a UAC. Used to register real users
//! through Kamailio in the compose suite.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use regmirror::core::digest::{self, RequestInfo, Secret};
use regmirror::core::sip::{challenges, parse_message};

pub struct Phone {
    socket: UdpSocket,
    local: SocketAddr,
    server: SocketAddr,
    pub user: String,
    password: String,
    pub domain: String,
    call_id: String,
    cseq: u32,
}

impl Phone {
    pub fn new(
        server: SocketAddr,
        user: &str,
        password: &str,
        domain: &str,
    ) -> std::io::Result<Phone> {
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        // The address the server sees: the route's source address.
        socket.connect(server)?;
        let local = socket.local_addr()?;
        socket.set_read_timeout(Some(Duration::from_millis(500)))?;
        Ok(Phone {
            socket,
            local,
            server,
            user: user.into(),
            password: password.into(),
            domain: domain.into(),
            call_id: format!(
                "phone-{}-{}@test",
                std::process::id(),
                rand::random::<u32>()
            ),
            cseq: 0,
        })
    }

    fn request(&mut self, expires: u32, auth: Option<(bool, String)>) -> (String, String) {
        self.cseq += 1;
        let branch = format!("z9hG4bK-ph{}", rand::random::<u64>());
        let (u, d, l) = (&self.user, &self.domain, self.local);
        let auth = match auth {
            Some((true, v)) => format!("Proxy-Authorization: {v}\r\n"),
            Some((false, v)) => format!("Authorization: {v}\r\n"),
            None => String::new(),
        };
        let msg = format!(
            "REGISTER sip:{d} SIP/2.0\r\nVia: SIP/2.0/UDP {l};branch={branch};rport\r\nMax-Forwards: 70\r\n\
             From: <sip:{u}@{d}>;tag=ph{}\r\nTo: <sip:{u}@{d}>\r\nCall-ID: {}\r\nCSeq: {} REGISTER\r\n\
             Contact: <sip:{u}@{l}>\r\nExpires: {expires}\r\n{auth}User-Agent: regmirror-test-phone\r\n\
             Content-Length: 0\r\n\r\n",
            self.cseq, self.call_id, self.cseq
        );
        (msg, branch)
    }

    /// Sends one request and returns its final response (retransmitting every 500 ms).
    fn transact(
        &self,
        msg: &str,
        branch: &str,
        timeout: Duration,
    ) -> Result<rsip::Response, String> {
        let end = Instant::now() + timeout;
        let mut buf = vec![0u8; 65_536];
        while Instant::now() < end {
            self.socket
                .send(msg.as_bytes())
                .map_err(|e| e.to_string())?;
            let resend = Instant::now() + Duration::from_millis(500);
            while Instant::now() < resend {
                let Ok(n) = self.socket.recv(&mut buf) else {
                    break;
                };
                let Ok(rsip::SipMessage::Response(r)) = parse_message(&buf[..n]) else {
                    continue;
                };
                if !String::from_utf8_lossy(&buf[..n]).contains(branch)
                    || r.status_code.code() < 200
                {
                    continue;
                }
                return Ok(r);
            }
        }
        Err(format!(
            "no final response from {} in {timeout:?}",
            self.server
        ))
    }

    /// REGISTER (Expires `expires`, 0 = unregister), answering one challenge. The final code.
    pub fn register(&mut self, expires: u32) -> Result<u16, String> {
        let (msg, branch) = self.request(expires, None);
        let r = self.transact(&msg, &branch, Duration::from_secs(8))?;
        let code = r.status_code.code();
        if code != 401 && code != 407 {
            return Ok(code);
        }
        let secret = Secret::Password(self.password.clone());
        let parsed: Vec<(bool, digest::Challenge)> = challenges(&r)
            .into_iter()
            .filter_map(|(p, c)| Some((p, c.ok()?)))
            .collect();
        let (proxy, ch) = parsed
            .iter()
            .find(|(_, c)| secret.can_answer(c))
            .ok_or("no challenge this password can answer")?;
        let uri = format!("sip:{}", self.domain);
        let value = digest::authorization(
            ch,
            &self.user,
            &secret,
            RequestInfo {
                method: "REGISTER",
                uri: &uri,
                body: b"",
            },
            1,
            &format!("{:016x}", rand::random::<u64>()),
        )
        .map_err(|e| e.to_string())?;
        let (msg, branch) = self.request(expires, Some((*proxy, value)));
        Ok(self
            .transact(&msg, &branch, Duration::from_secs(8))?
            .status_code
            .code())
    }
}
