//! Carries out what a binding's state machine (`core::binding`) decides: starts through the
//! node's send budget and queues, the REGISTER with the digest answer from the node's nonce,
//! the budget given back when a transaction ends, and the events operators see.

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
        if self.bindings[idx].enqueue(op) && self.nodes[node].health.up {
            self.nodes[node].replay.push_back(idx as u32);
            self.pump_replay(now, node);
        }
    }

    /// Decides what a binding with no transaction in flight should do next.
    pub(super) fn drive(&mut self, now: Instant, idx: usize) {
        let want = self.wants_registration(now, idx);
        let before = self.bindings[idx].state();
        let step = self.bindings[idx].on_want(want);
        self.apply(now, idx, step);
        self.emit_change(idx, before, None);
        self.schedule(idx);
        self.track(now, idx);
    }

    /// Carries out a binding's step.
    pub(super) fn apply(&mut self, now: Instant, idx: usize, step: Step) {
        match step {
            Step::Wait => {}
            Step::Begin => self.begin(now, idx, Op::Register),
            Step::Start(op) => self.start_op(now, idx, op),
            Step::Retry => self.retry_now(now, idx),
            Step::Resend => self.send_request(now, idx),
            Step::Deferred => self.counters.refreshes_deferred += 1,
            Step::Remove => self.remove_binding(idx),
        }
    }

    /// The binding's transaction is over: its send budget goes to the next waiting binding,
    /// then the binding takes its step.
    pub(super) fn conclude(&mut self, now: Instant, idx: usize, step: Step) {
        self.finish_op(now, idx);
        self.apply(now, idx, step);
    }

    /// The settings the bindings' transitions read.
    pub(super) fn policy(&self) -> Policy {
        Policy {
            retry_base: self.cfg.retry_base,
            retry_max: self.cfg.retry_max,
            unregister_attempts: self.cfg.unregister_attempts,
            refresh_margin: self.timers.timer_f + REFRESH_SLACK,
            storm_hold: if self.storm_gated() {
                self.cfg.farm.storm_hold
            } else {
                Duration::ZERO
            },
        }
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
        self.start_or_queue(now, idx, op);
        self.recount(idx);
    }

    fn start_or_queue(&mut self, now: Instant, idx: usize, op: Op) {
        let node = idx % self.nodes.len();
        let storm = self.storm_holding(now);
        let b = &mut self.bindings[idx];
        if !b.retarget(op) {
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
            && ns.inflight < ns.budget(&self.cfg)
            && ns
                .rate
                .take(now, self.cfg.farm.max_register_rate, &mut self.rng)
        {
            ns.inflight += 1;
            b.launch();
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
            if !ns.health.up || ns.inflight >= ns.budget(&self.cfg) {
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
        let (cseq, expires) = b.next_request(self.cfg.register_expires);
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
            cseq,
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
            cseq,
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
        let outcome = self.bindings[idx].on_final(
            &txn,
            info.code,
            info.min_expires,
            info.retry_after,
            &mut self.rng,
        );
        match outcome {
            Final::Success => self.on_success(now, idx, &txn, info),
            Final::Challenge { proxy } => self.on_challenge(now, idx, &txn, info, proxy),
            Final::Resend => self.send_request(now, idx),
            Final::Failed(why, wait) => self.on_failure(now, idx, why, wait),
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
        let policy = self.policy();
        let step = self.bindings[idx].on_success(now, txn, granted, want, &policy, &mut self.rng);
        if self.bindings[idx].phase == Phase::Registered {
            self.unpend(idx); // the node has it: no longer pending (`Coverage`)
        }
        self.conclude(now, idx, step);
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
        let realm = self.nodes[idx % n].remember_nonce(now, &challenges, chosen, proxy);
        // Signed with a credential replaced since (a refetch answered meanwhile): not a
        // rejection of the current one.
        let outdated = (self.aors[slot].cred_from_txn.wrapping_sub(txn.id) as i32) > 0;
        match self.bindings[idx].on_challenge(txn, stale, outdated, realm) {
            Ok(step) => self.apply(now, idx, step),
            Err(why) => {
                if why == LastResult::CredentialRejected {
                    self.counters.credential_rejected += 1;
                    if let Some(name) = self.aors[slot].name.clone() {
                        self.events.push_back(Event::CredentialRejected {
                            aor: name,
                            node: (idx % n) as NodeId,
                        });
                    }
                }
                self.on_failure(now, idx, why, None);
            }
        }
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
        let Some(i) = ns.pick_nonce(b.realm, &cred.secret) else {
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

    /// The attempt failed: back off (or give an unregister up after enough tries).
    pub(super) fn on_failure(
        &mut self,
        now: Instant,
        idx: usize,
        why: LastResult,
        wait: Option<Duration>,
    ) {
        let want = self.wants_registration(now, idx);
        let policy = self.policy();
        let step = self.bindings[idx].on_failure(now, why, wait, want, &policy, &mut self.rng);
        self.conclude(now, idx, step);
    }

    pub(super) fn remove_binding(&mut self, idx: usize) {
        let n = self.nodes.len();
        let b = &mut self.bindings[idx];
        if b.phase == Phase::Absent {
            return;
        }
        b.reset();
        self.recount(idx);
        if let Some(name) = self.aors[idx / n].name.clone() {
            self.events.push_back(Event::BindingRemoved {
                aor: name,
                node: (idx % n) as NodeId,
            });
        }
    }

    /// A binding timer fired.
    pub(super) fn fire(&mut self, now: Instant, idx: usize) {
        let node = idx % self.nodes.len();
        let before = self.bindings[idx].state();
        match self.bindings[idx].on_txn_timer(now, &self.timers) {
            TxnTimer::Quiet => {}
            TxnTimer::Retransmit => {
                if let Some(t) = &self.bindings[idx].txn {
                    let node = &self.nodes[node].node;
                    self.transmits.push_back(Transmit {
                        dest: node.addr,
                        transport: node.transport,
                        payload: t.payload.clone(),
                    });
                    self.counters.retransmits += 1;
                }
            }
            TxnTimer::TimedOut(t) => {
                self.forget_relocated(t.id);
                self.counters.timeouts += 1;
                self.congestion_feedback(now, node, None);
                self.on_failure(now, idx, LastResult::Timeout, None);
                self.register_timed_out(now, node);
            }
        }
        let hold_end = if self.storm_holding(now) {
            self.storm.hold_end(self.cfg.farm.storm_hold)
        } else {
            None
        };
        let deferred = self.bindings[idx].refresh_deferral(now, hold_end);
        let step = self.bindings[idx].on_due(now, deferred);
        self.apply(now, idx, step);
        self.emit_change(idx, before, None);
        self.track(now, idx);
        let slot = (idx / self.nodes.len()) as u32;
        self.maybe_free_aor(now, slot);
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
        self.recount(idx);
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
        self.recount(idx);
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
            failures: b.failures,
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
