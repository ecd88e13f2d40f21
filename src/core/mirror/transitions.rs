//! A binding's transitions: start, send (with digest and the node's nonce), final response,
//! failure and backoff, timers, and the events they emit.

use super::*;
use crate::core::sip::RegisterRequest;

impl Mirror {
    /// Starts `op`, through the paced queue when reconciliation added the AOR.
    pub(super) fn begin(&mut self, now: Instant, idx: usize, op: Op) {
        let n = self.nodes.len();
        if !self.aors[idx / n].paced || self.cfg.farm.replay_rate == 0 {
            self.start_op(now, idx, op);
            return;
        }
        let node = idx % n;
        let b = &mut self.bindings[idx];
        if b.phase == Phase::InFlight || b.phase == Phase::Queued {
            return;
        }
        b.op = op;
        b.failures = 0;
        b.action_at = None;
        b.phase = Phase::Queued;
        if self.nodes[node].health.up {
            self.nodes[node].replay.push_back(idx as u32);
            self.pump_replay(now, node);
        }
    }

    /// Decides what a binding with no transaction in flight should do next.
    pub(super) fn drive(&mut self, now: Instant, idx: usize) {
        let want = self.wants_registration(now, idx);
        let before = self.bindings[idx].state();
        let b = &mut self.bindings[idx];
        match b.phase {
            Phase::InFlight => {} // decided when the transaction ends
            Phase::Queued => {
                if want {
                    if b.op != Op::Register {
                        b.op = Op::Register;
                        b.failures = 0;
                    }
                } else if b.server_bound {
                    if b.op != Op::Unregister {
                        b.op = Op::Unregister;
                        b.failures = 0;
                    }
                } else {
                    self.remove_binding(idx);
                }
            }
            Phase::Absent => {
                if want {
                    self.begin(now, idx, Op::Register);
                }
            }
            Phase::Registered => {
                if !want {
                    self.start_op(now, idx, Op::Unregister);
                }
            }
            Phase::Backoff => match (want, b.op) {
                (true, Op::Unregister) => self.start_op(now, idx, Op::Register),
                (false, Op::Register) if b.server_bound => self.start_op(now, idx, Op::Unregister),
                (false, Op::Register) => self.remove_binding(idx),
                _ => {} // keep backing off
            },
        }
        self.emit_change(idx, before, None);
        self.schedule(idx);
        self.track(now, idx);
    }

    /// A binding backing off tries its operation again (counted as a retry).
    pub(super) fn retry_now(&mut self, now: Instant, idx: usize) {
        self.events.push_back(Event::Retrying {
            node: (idx % self.nodes.len()) as NodeId,
        });
        let op = self.bindings[idx].op;
        self.start_op(now, idx, op);
    }

    /// Begins `op` now, or queues it behind the node's send budget.
    pub(super) fn start_op(&mut self, now: Instant, idx: usize, op: Op) {
        let node = idx % self.nodes.len();
        let storm = self.storm_holding(now);
        let b = &mut self.bindings[idx];
        if b.phase == Phase::InFlight {
            return; // decided when the transaction ends
        }
        if b.op != op {
            b.failures = 0;
        }
        b.op = op;
        b.action_at = None;
        if b.phase == Phase::Queued {
            return;
        }
        let ns = &mut self.nodes[node];
        if !ns.health.up {
            // Parked: the node is down; its replay starts this binding when it comes back.
            b.phase = Phase::Queued;
            return;
        }
        let refresh = b.confirmed && op == Op::Register;
        let held = !refresh && storm;
        if !held
            && ns.inflight < budget(&self.cfg, ns)
            && ns
                .rate
                .take(now, self.cfg.farm.max_register_rate, &mut self.rng)
        {
            ns.inflight += 1;
            b.phase = Phase::InFlight;
            b.rounds = 0;
            self.send_request(now, idx);
        } else {
            let queue = if refresh {
                &mut ns.refreshes
            } else {
                &mut ns.waiting
            };
            b.phase = Phase::Queued;
            queue.push_back(idx as u32);
        }
    }

    /// Ends the operation of `idx` and gives its send budget to the next waiting binding.
    pub(super) fn finish_op(&mut self, now: Instant, idx: usize) {
        let node = idx % self.nodes.len();
        let ns = &mut self.nodes[node];
        ns.inflight = ns.inflight.saturating_sub(1);
        self.pump_waiting(now, node);
    }

    /// Starts queued bindings, refreshes first, then paced replays, as far as the send budget
    /// and `farm.max_register_rate` allow (only refreshes while a storm holds new work).
    pub(super) fn pump_waiting(&mut self, now: Instant, node: usize) {
        let held = self.storm_holding(now);
        loop {
            let ns = &mut self.nodes[node];
            if !ns.health.up || ns.inflight >= budget(&self.cfg, ns) {
                return;
            }
            let queue = if ns.refreshes.is_empty() {
                if held {
                    return;
                }
                &mut ns.waiting
            } else {
                &mut ns.refreshes
            };
            let Some(&w) = queue.front() else {
                break;
            };
            let w = w as usize;
            if self.bindings[w].phase != Phase::Queued {
                queue.pop_front(); // started or dropped meanwhile
                continue;
            }
            if !ns
                .rate
                .take(now, self.cfg.farm.max_register_rate, &mut self.rng)
            {
                return;
            }
            queue.pop_front();
            self.launch_queued(now, w);
        }
        self.pump_replay(now, node);
    }

    /// Sends a new transaction of the binding's current op (first attempt or auth/423 retry).
    pub(super) fn send_request(&mut self, now: Instant, idx: usize) {
        let n = self.nodes.len();
        let slot = idx / n;
        let (auth, auth_value, proxy) = self.authorization(now, idx);
        let node = &self.nodes[idx % n].node;
        let a = &self.aors[slot];
        let Some(user) = a.name.as_deref() else {
            return;
        };
        let b = &mut self.bindings[idx];
        b.cseq = b.cseq.wrapping_add(1);
        let expires = match b.op {
            Op::Register => self.cfg.register_expires.max(b.min_expires),
            Op::Unregister => 0,
        };
        let id = self.next_txn;
        self.next_txn = self.next_txn.wrapping_add(1);
        let br = branch(self.prefix, idx as u32, id);
        let uid = self.nodes[idx % n].uid;
        let call_id = call_id(self.prefix, slot, uid, a.gen);
        let tag = from_tag(self.prefix, slot, uid, a.gen);
        let tcp = node.transport == Transport::Tcp;
        let payload = RegisterRequest {
            domain: &self.cfg.domain,
            user,
            contact_host: &self.cfg.contact_host,
            local_addr: self.cfg.local_addr,
            tcp,
            branch: br.as_str(),
            call_id: call_id.as_str(),
            from_tag: tag.as_str(),
            cseq: b.cseq,
            expires,
            authorization: auth_value.as_deref().map(|v| (proxy, v)),
            user_agent: &self.cfg.user_agent,
        }
        .to_bytes();
        self.transmits.push_back(Transmit {
            dest: node.addr,
            transport: node.transport,
            payload: payload.clone(),
        });
        b.txn = Some(Box::new(Txn {
            id,
            cseq: b.cseq,
            expires,
            auth,
            timers: NonInviteClient::new(now, &self.timers, tcp),
            sent_at: now,
            payload,
        }));
        self.counters.transactions += 1;
    }

    pub(super) fn match_transaction(
        &self,
        from: SocketAddr,
        info: &ResponseInfo<'_>,
    ) -> Option<usize> {
        let (idx, id) = parse_branch(info.branch?, self.prefix)?;
        let mut idx = idx as usize;
        let here = |i: usize| {
            self.bindings
                .get(i)
                .and_then(|b| b.txn.as_ref())
                .is_some_and(|t| t.id == id)
        };
        if !here(idx) {
            // Sent before `add_node`/`remove_node` moved the binding.
            idx = *self.relocated.get(&id)? as usize;
        }
        let b = self.bindings.get(idx)?;
        let t = b.txn.as_ref()?;
        let n = self.nodes.len();
        if t.id != id || info.cseq != Some(t.cseq) || !info.cseq_is_register {
            return None;
        }
        if self.nodes[idx % n].node.addr.ip() != from.ip() {
            return None;
        }
        let gen = self.aors[idx / n].gen;
        let got = info.call_id?;
        let expected = call_id(self.prefix, idx / n, self.nodes[idx % n].uid, gen);
        (got == expected.as_str()).then_some(idx)
    }

    pub(super) fn on_final(&mut self, now: Instant, idx: usize, txn: Txn, info: &ResponseInfo<'_>) {
        let code = info.code;
        match code {
            200..=299 => self.on_success(now, idx, &txn, info),
            401 | 407 => self.on_challenge(now, idx, &txn, info, code == 407),
            423 if txn.expires > 0 => {
                let b = &mut self.bindings[idx];
                match info.min_expires {
                    Some(m) if m > txn.expires && b.rounds < MAX_ROUNDS => {
                        b.min_expires = m;
                        b.rounds += 1;
                        self.send_request(now, idx);
                    }
                    _ => self.on_failure(now, idx, LastResult::Status(code), None),
                }
            }
            // Nothing bound there: an unregister has nothing left to remove.
            404 if txn.expires == 0 => self.on_success(now, idx, &txn, info),
            503 => {
                let wait = info.retry_after.map(|s| {
                    // Capped: a node (or a forged answer) must not park a binding for years.
                    let d = Duration::from_secs(u64::from(s.min(MAX_RETRY_AFTER_S)));
                    // A little jitter so a node's shared Retry-After does not synchronise everyone.
                    d + d.mul_f64(self.rng.gen_range(0.0..0.1))
                });
                self.on_failure(now, idx, LastResult::Status(code), wait)
            }
            _ => self.on_failure(now, idx, LastResult::Status(code), None),
        }
    }

    pub(super) fn on_success(
        &mut self,
        now: Instant,
        idx: usize,
        txn: &Txn,
        info: &ResponseInfo<'_>,
    ) {
        let n = self.nodes.len();
        let want = self.wants_registration(now, idx);
        let granted = match self.aors[idx / n].name.as_deref() {
            Some(user) => info.granted_expires(user, &self.cfg.contact_host),
            None => None,
        };
        let margin = self.timers.timer_f + REFRESH_SLACK;
        // With a storm hold, refresh that much earlier so a refresh due in a hold can wait.
        let hold = if self.storm_gated() {
            self.cfg.farm.storm_hold
        } else {
            Duration::ZERO
        };
        let b = &mut self.bindings[idx];
        b.last = LastResult::Status(info.code);
        b.failures = 0;
        if txn.expires > 0 {
            // Never longer than asked: a longer grant would push the refresh past what the
            // node will keep if it (or a forged answer) overstates it.
            let g = granted
                .filter(|&g| g > 0)
                .unwrap_or(txn.expires)
                .min(txn.expires);
            // The node has it: no longer pending (`Coverage`).
            self.unpend(idx);
            let b = &mut self.bindings[idx];
            let landed = !b.confirmed;
            b.granted = g;
            b.confirmed = true;
            b.server_bound = true;
            b.phase = Phase::Registered;
            let delay = if landed {
                first_refresh_delay(&mut self.rng, g, margin + hold)
            } else {
                refresh_delay(&mut self.rng, g, margin + hold)
            };
            let left = Duration::from_secs(u64::from(g)).saturating_sub(delay);
            let slack = left.saturating_sub(margin).min(hold).as_secs();
            b.refresh_slack = u16::try_from(slack).unwrap_or(u16::MAX);
            b.action_at = Some(now + delay);
            self.finish_op(now, idx);
            if !want {
                // The AOR died while this REGISTER was in flight.
                self.start_op(now, idx, Op::Unregister);
            }
        } else {
            b.server_bound = false;
            b.confirmed = false;
            b.granted = 0;
            b.phase = Phase::Backoff; // transient: not InFlight, so start_op/remove apply
            self.finish_op(now, idx);
            if want {
                self.start_op(now, idx, Op::Register);
            } else {
                self.remove_binding(idx);
            }
        }
    }

    pub(super) fn on_challenge(
        &mut self,
        now: Instant,
        idx: usize,
        txn: &Txn,
        info: &ResponseInfo<'_>,
        proxy: bool,
    ) {
        self.counters.challenges += 1;
        let n = self.nodes.len();
        let slot = idx / n;
        let ns = &mut self.nodes[idx % n];
        ns.challenges += 1;
        if txn.auth == AuthSent::Preemptive {
            ns.preemptive_challenged += 1;
        }
        let challenges = info.challenges(proxy);
        let Some(cred) = self.aors[slot].credential.as_ref() else {
            self.on_failure(now, idx, LastResult::NoCredential, None);
            let a = &mut self.aors[slot];
            if !a.missing_reported && !a.removed {
                a.missing_reported = true;
                if let Some(name) = a.name.clone() {
                    self.events
                        .push_back(Event::CredentialMissing { aor: name });
                }
            }
            return;
        };
        let Some(chosen) = digest::choose(&challenges, &cred.secret) else {
            self.on_failure(now, idx, LastResult::NoUsableChallenge, None);
            return;
        };
        let stale = chosen.stale;
        let realm = self.remember_nonce(now, idx % n, &challenges, chosen, proxy);
        let b = &mut self.bindings[idx];
        b.realm = realm;
        b.auth_next = AuthNext::Fresh;
        // Signed with a credential replaced since (a refetch answered meanwhile): not a
        // rejection of the current one.
        let outdated = (self.aors[slot].cred_from_txn.wrapping_sub(txn.id) as i32) > 0;
        if !stale && txn.auth == AuthSent::Fresh && !outdated {
            self.counters.credential_rejected += 1;
            if let Some(name) = self.aors[slot].name.clone() {
                self.events.push_back(Event::CredentialRejected {
                    aor: name,
                    node: (idx % n) as NodeId,
                });
            }
            self.on_failure(now, idx, LastResult::CredentialRejected, None);
            return;
        }
        if b.rounds >= MAX_ROUNDS {
            self.on_failure(now, idx, LastResult::TooManyRoundTrips, None);
            return;
        }
        b.rounds += 1;
        self.send_request(now, idx);
    }

    /// Makes the challenges of `chosen`'s realm the node's latest nonce for that realm; returns
    /// its `Binding::realm` number.
    pub(super) fn remember_nonce(
        &mut self,
        now: Instant,
        node: usize,
        challenges: &[Challenge],
        chosen: &Challenge,
        proxy: bool,
    ) -> u8 {
        let entry = NodeNonce {
            challenges: challenges
                .iter()
                .filter(|c| c.realm == chosen.realm)
                .cloned()
                .collect(),
            proxy,
            received: now,
            nc: 0,
        };
        let nonces = &mut self.nodes[node].nonces;
        let i = match nonces
            .iter()
            .position(|e| e.proxy == proxy && e.realm() == chosen.realm)
        {
            Some(i) => i,
            None if nonces.len() < NODE_REALMS => {
                nonces.push(entry);
                return nonces.len() as u8;
            }
            // Full: replace the oldest (bindings pointing at it guess wrong once, then relearn).
            None => (0..nonces.len())
                .min_by_key(|&i| nonces[i].received)
                .unwrap_or(0),
        };
        nonces[i] = entry;
        i as u8 + 1
    }

    /// The digest answer for the binding's next request, from its node's latest nonce of its
    /// realm: `(kind, header value, proxy)`.
    pub(super) fn authorization(
        &mut self,
        now: Instant,
        idx: usize,
    ) -> (AuthSent, Option<String>, bool) {
        let n = self.nodes.len();
        let b = &mut self.bindings[idx];
        if b.rounds == 0 {
            b.auth_next = AuthNext::Preemptive; // a new attempt
        }
        let next = b.auth_next;
        if next == AuthNext::Fresh {
            b.auth_next = AuthNext::Again;
        }
        let none = (AuthSent::None, None, false);
        let Some(cred) = self.aors[idx / n].credential.as_ref() else {
            return none;
        };
        let ns = &mut self.nodes[idx % n];
        let Some(i) = pick_nonce(&ns.nonces, b.realm, &cred.secret) else {
            return none;
        };
        let entry = &mut ns.nonces[i];
        let reuse = self.cfg.farm.nonce_reuse;
        if next == AuthNext::Preemptive
            && (reuse.is_zero() || now.saturating_duration_since(entry.received) >= reuse)
        {
            return none;
        }
        let Some(ch) = digest::choose(&entry.challenges, &cred.secret) else {
            return none;
        };
        let nc = entry.nc.wrapping_add(1).max(1);
        let cnonce = format!("{:016x}", self.rng.gen::<u64>());
        let req = RequestInfo {
            method: "REGISTER",
            uri: self.request_uri.as_str(),
            body: b"",
        };
        let Ok(v) = digest::authorization(ch, &cred.username, &cred.secret, req, nc, &cnonce)
        else {
            return none;
        };
        entry.nc = nc;
        b.realm = i as u8 + 1;
        let kind = match next {
            AuthNext::Preemptive => {
                ns.preemptive += 1;
                AuthSent::Preemptive
            }
            AuthNext::Fresh => AuthSent::Fresh,
            AuthNext::Again => AuthSent::Cached,
        };
        (kind, Some(v), entry.proxy)
    }

    /// The attempt failed: back off (or give up an unregister after enough tries).
    pub(super) fn on_failure(
        &mut self,
        now: Instant,
        idx: usize,
        why: LastResult,
        wait: Option<Duration>,
    ) {
        let want = self.wants_registration(now, idx);
        let b = &mut self.bindings[idx];
        b.last = why;
        b.confirmed = false;
        b.failures = b.failures.saturating_add(1);
        if b.op == Op::Register && why == LastResult::Timeout {
            b.server_bound = true; // it may have arrived
        }
        b.phase = Phase::Backoff;
        let op = b.op;
        let failures = b.failures;
        self.finish_op(now, idx);
        match op {
            Op::Unregister if want => self.start_op(now, idx, Op::Register),
            Op::Unregister if failures >= self.cfg.unregister_attempts => self.remove_binding(idx),
            Op::Register if !want => {
                if self.bindings[idx].server_bound {
                    self.start_op(now, idx, Op::Unregister)
                } else {
                    self.remove_binding(idx)
                }
            }
            _ => {
                let d = wait.unwrap_or_else(|| {
                    backoff(
                        &mut self.rng,
                        self.cfg.retry_base,
                        self.cfg.retry_max,
                        failures,
                    )
                });
                self.bindings[idx].action_at = Some(now + d);
            }
        }
    }

    pub(super) fn remove_binding(&mut self, idx: usize) {
        let n = self.nodes.len();
        let b = &mut self.bindings[idx];
        if b.phase == Phase::Absent {
            return;
        }
        b.reset();
        if let Some(name) = self.aors[idx / n].name.clone() {
            self.events.push_back(Event::BindingRemoved {
                aor: name,
                node: (idx % n) as NodeId,
            });
        }
    }

    /// A binding timer fired.
    pub(super) fn fire(&mut self, now: Instant, idx: usize) {
        let before = self.bindings[idx].state();
        if let Some(t) = self.bindings[idx].txn.as_mut() {
            if now >= t.timers.deadline() {
                match t.timers.on_timer(now, &self.timers) {
                    TimerAction::Retransmit => {
                        let node = &self.nodes[idx % self.nodes.len()].node;
                        self.transmits.push_back(Transmit {
                            dest: node.addr,
                            transport: node.transport,
                            payload: t.payload.clone(),
                        });
                        self.counters.retransmits += 1;
                    }
                    TimerAction::Timeout => {
                        if let Some(t) = self.bindings[idx].txn.take() {
                            self.forget_relocated(t.id);
                        }
                        self.counters.timeouts += 1;
                        self.congestion_feedback(now, idx % self.nodes.len(), None);
                        self.on_failure(now, idx, LastResult::Timeout, None);
                        self.register_timed_out(now, idx % self.nodes.len());
                    }
                    TimerAction::None => {}
                }
            }
        }
        let deferred = self.refresh_deferral(now, idx);
        let b = &mut self.bindings[idx];
        if b.txn.is_none() && b.action_at.is_some_and(|t| t <= now) {
            b.action_at = None;
            match b.phase {
                Phase::Registered if deferred.is_some() => {
                    b.action_at = deferred;
                    b.refresh_slack = 0;
                    self.counters.refreshes_deferred += 1;
                }
                Phase::Registered => self.start_op(now, idx, Op::Register),
                Phase::Backoff => self.retry_now(now, idx),
                _ => {}
            }
        }
        self.emit_change(idx, before, None);
        self.track(now, idx);
        let slot = (idx / self.nodes.len()) as u32;
        self.maybe_free_aor(now, slot);
    }

    /// Where a refresh falling due in a storm hold waits: the hold's latest end, or as long as
    /// the binding's slack allows (None: refresh now).
    pub(super) fn refresh_deferral(&self, now: Instant, idx: usize) -> Option<Instant> {
        let b = &self.bindings[idx];
        if b.refresh_slack == 0 || b.phase != Phase::Registered || !self.storm_holding(now) {
            return None;
        }
        let due = b.action_at?;
        let latest = due + Duration::from_secs(u64::from(b.refresh_slack));
        let until = self.storm.hold_end(self.cfg.farm.storm_hold)?.min(latest);
        (until > now).then_some(until)
    }

    /// Pushes a timer-queue entry when the binding's deadline moved.
    pub(super) fn schedule(&mut self, idx: usize) {
        let b = &mut self.bindings[idx];
        let d = b.deadline();
        if d != b.scheduled {
            b.scheduled = d;
            if let Some(t) = d {
                self.queue.push(Reverse((t, idx as u32)));
            }
        }
    }

    pub(super) fn compact_queue(&mut self) {
        let mut v = std::mem::take(&mut self.queue).into_vec();
        v.retain(|Reverse((at, key))| {
            if key & AOR_TIMER != 0 {
                self.aors[(key & !AOR_TIMER) as usize].scheduled == Some(*at)
            } else {
                self.bindings[*key as usize].scheduled == Some(*at)
            }
        });
        self.queue = BinaryHeap::from(v);
    }

    pub(super) fn emit_change(
        &mut self,
        idx: usize,
        before: Option<BindingState>,
        reason: Option<String>,
    ) {
        let b = &self.bindings[idx];
        let Some(state) = b.state() else { return };
        if Some(state) == before {
            return;
        }
        let n = self.nodes.len();
        let Some(aor) = self.aors[idx / n].name.clone() else {
            return;
        };
        let reason = reason.unwrap_or_else(|| match (state, b.last) {
            (BindingState::Registering | BindingState::Unregistering, _)
                if b.phase != Phase::Backoff =>
            {
                String::from(if b.phase == Phase::Queued {
                    "queued"
                } else {
                    "sent"
                })
            }
            (_, last) => last.to_string(),
        });
        self.events.push_back(Event::BindingChanged {
            aor,
            node: (idx % n) as NodeId,
            state,
            reason,
        });
    }
}

/// Call-ID of a binding: stable for its AOR slot, node and slot generation.
fn call_id(prefix: u32, slot: usize, node_uid: u32, gen: u32) -> Id {
    let mut id = Id::new();
    id.hex(prefix.into(), 8)
        .push("-")
        .hex(slot as u64, 0)
        .push("-")
        .hex(node_uid.into(), 0)
        .push("-")
        .hex(gen.into(), 0);
    id
}

/// From tag of a binding: `{prefix:08x}{slot:x}n{node_uid:x}g{gen:x}`.
fn from_tag(prefix: u32, slot: usize, node_uid: u32, gen: u32) -> Id {
    let mut id = Id::new();
    id.hex(prefix.into(), 8)
        .hex(slot as u64, 0)
        .push("n")
        .hex(node_uid.into(), 0)
        .push("g")
        .hex(gen.into(), 0);
    id
}

/// Which of a node's nonces a binding answers: the realm that challenged it last; else, for a
/// stored HA1, its realm; else the newest. A wrong guess costs one challenge, then it is learnt.
fn pick_nonce(nonces: &[NodeNonce], known: u8, secret: &Secret) -> Option<usize> {
    let fits = |e: &NodeNonce| match secret {
        Secret::Ha1Md5 { realm, .. } => e.realm() == realm,
        Secret::Password(_) => true,
    };
    let known = usize::from(known)
        .checked_sub(1)
        .filter(|&i| nonces.get(i).is_some_and(fits));
    known.or_else(|| {
        (0..nonces.len())
            .filter(|&i| fits(&nonces[i]))
            .max_by_key(|&i| nonces[i].received)
    })
}
