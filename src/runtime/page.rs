//! The status page (`/status`): each node's health, coverage and lag at a glance with a picture
//! of the last hour, the HA pair, traffic, and a bindings view searched by user and sorted.
//! Plain HTML with inline SVG, no script and no external asset; it reloads itself every 5 s
//! (the same URL, so a search stays).

use std::collections::VecDeque;
use std::fmt::Write as _;

use crate::status::{health_text, lag_text, percent_text, BindingList, BindingSort, FarmStatus};

/// One sample of the farm every `SAMPLE_EVERY` for the last hour.
pub const SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
const SAMPLES: usize = 360;

#[derive(Debug, Clone, PartialEq)]
struct Sample {
    live_aors: u64,
    transactions: u64,
    drift: u64,
    /// Per node, in the farm's order: (name, coverage %, lag s).
    nodes: Vec<(String, f64, f64)>,
}

/// The last hour of farm samples the page draws.
#[derive(Debug, Default)]
pub struct History {
    samples: VecDeque<Sample>,
}

impl History {
    pub fn push(&mut self, f: &FarmStatus) {
        if self.samples.len() == SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample {
            live_aors: f.live_aors,
            transactions: f.stats.transactions,
            drift: f.nodes.iter().map(|n| n.drift).sum(),
            nodes: f
                .nodes
                .iter()
                .map(|n| (n.name.clone(), n.coverage_percent, n.lag_seconds))
                .collect(),
        });
    }

    fn node(&self, name: &str, pick: impl Fn(f64, f64) -> f64) -> Vec<f64> {
        self.samples
            .iter()
            .filter_map(|s| s.nodes.iter().find(|n| n.0 == name))
            .map(|n| pick(n.1, n.2))
            .collect()
    }

    /// REGISTER transactions per minute between samples.
    fn per_minute(&self) -> Vec<f64> {
        let per = 60.0 / SAMPLE_EVERY.as_secs_f64();
        let t: Vec<u64> = self.samples.iter().map(|s| s.transactions).collect();
        t.windows(2)
            .map(|w| w[1].saturating_sub(w[0]) as f64 * per)
            .collect()
    }
}

/// A 160x32 line of `values` (oldest first, the newest at the right edge) scaled to
/// `0..=max(top, largest value)`, with `label` as its title.
fn sparkline(values: &[f64], top: f64, class: &str, label: &str) -> String {
    const W: f64 = 160.0;
    const H: f64 = 32.0;
    let max = values
        .iter()
        .copied()
        .fold(top, f64::max)
        .max(f64::MIN_POSITIVE);
    let step = W / (SAMPLES - 1) as f64;
    let x0 = W - step * values.len().saturating_sub(1) as f64;
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            format!(
                "{:.1},{:.1}",
                x0 + step * i as f64,
                H - 1.0 - (v / max) * (H - 2.0)
            )
        })
        .collect();
    format!(
        "<svg class=\"spark {class}\" width=\"160\" height=\"32\" viewBox=\"0 0 160 32\" role=\"img\">\
         <title>{}</title><rect width=\"160\" height=\"32\"/><polyline points=\"{}\"/></svg>",
        esc(label),
        points.join(" ")
    )
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A query value in a link (users are `A-Z a-z 0-9 . _ - + ...`).
fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em 2em;color:#222}\
    h1{font-size:1.5em;margin:0 0 .2em}h2{font-size:1.15em;margin:1.2em 0 .4em}.sub{color:#666;margin-bottom:.6em}\
    table{border-collapse:collapse;margin-bottom:1em}\
    td,th{border:1px solid #ccc;padding:4px 12px;text-align:left}th{background:#f3f3f3}\
    td.n{text-align:right;font-variant-numeric:tabular-nums}\
    .up,.registered{color:#080;font-weight:600}.down,.failed{color:#c00;font-weight:600}\
    .unknown,.registering,.unregistering,.standby,.maintenance{color:#a60}.partial{color:#a60;font-weight:600}\
    .active,.full{color:#080;font-weight:600}.zero{color:#999}\
    svg.spark rect{fill:#f7f7f7}svg.spark polyline{fill:none;stroke-width:1.5}\
    svg.coverage polyline{stroke:#080}svg.lag polyline{stroke:#a60}svg.rate polyline{stroke:#36c}\
    svg.drift polyline{stroke:#c00}svg.aors polyline{stroke:#555}\
    td.spark{padding:2px 6px}form{margin:.4em 0 .8em}input,select,button{font:inherit}\
    a.sort{color:inherit}a.sort.on{font-weight:700;text-decoration:none}";

/// The page for `s`, whose bindings were listed by `list`.
pub fn render_html(s: &FarmStatus, history: &History, list: &BindingList) -> String {
    let mut o = String::with_capacity(16_384 + s.bindings.len() * 160);
    let _ = write!(
        o,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"5\"><title>regmirror status</title>\
         <style>{STYLE}</style></head><body>"
    );
    let _ = write!(
        o,
        "<h1>regmirror</h1><div class=\"sub\">version {} &middot; up {} s &middot; \
         <span id=\"live-aors\">{}</span> live AOR(s) &middot; {} binding(s) &middot; {} node(s)</div>",
        esc(&s.version),
        s.uptime_seconds,
        s.live_aors,
        s.bindings_total,
        s.nodes.len()
    );
    let _ = write!(
        o,
        "<div class=\"sub\">role <span id=\"ha-role\">{}</span> &middot; \
         <span id=\"ha-state\" class=\"{1}\">{1}</span>{2} &middot; {3} takeover(s)</div>",
        esc(&s.ha.role),
        esc(&s.ha.state),
        s.ha.peer
            .as_deref()
            .map(|p| format!(" &middot; peer {}", esc(p)))
            .unwrap_or_default(),
        s.ha.takeovers
    );
    nodes(&mut o, s, history);
    traffic(&mut o, s, history);
    bindings(&mut o, s, list);
    o.push_str("</body></html>\n");
    o
}

fn nodes(o: &mut String, s: &FarmStatus, history: &History) {
    o.push_str(
        "<h2>Farm</h2><table id=\"nodes\"><tr><th>node</th><th>address</th><th>health</th>\
         <th>coverage</th><th>lag</th><th>last hour: coverage, lag</th><th>desired</th>\
         <th>confirmed</th><th>registering</th><th>unregistering</th><th>failing</th><th>drift</th></tr>",
    );
    let num = |o: &mut String, class: &str, v: u64| {
        let z = if v == 0 { " zero" } else { "" };
        let _ = write!(o, "<td class=\"n {class}{z}\">{v}</td>");
    };
    for n in &s.nodes {
        let _ = write!(
            o,
            "<tr class=\"node\" data-node=\"{0}\"><td class=\"name\">{0}</td><td>{1}</td>\
             <td class=\"{2}{3}\">{4}</td>",
            esc(&n.name),
            esc(&n.address),
            esc(&n.health),
            if n.maintenance { " maintenance" } else { "" },
            esc(&health_text(&n.health, n.maintenance))
        );
        let _ = write!(
            o,
            "<td class=\"n coverage {}\">{}</td><td class=\"n lag{}\">{}</td><td class=\"spark\">{}{}</td>",
            if n.covered >= n.desired {
                "full"
            } else {
                "partial"
            },
            percent_text(n.coverage_percent),
            if n.lag_seconds > 0.0 { "" } else { " zero" },
            lag_text(n.lag_seconds),
            sparkline(
                &history.node(&n.name, |c, _| c),
                100.0,
                "coverage",
                &format!("{} coverage, last hour (0-100%)", n.name)
            ),
            sparkline(
                &history.node(&n.name, |_, l| l),
                10.0,
                "lag",
                &format!("{} lag, last hour (s)", n.name)
            ),
        );
        num(o, "desired", n.desired);
        num(o, "confirmed", n.confirmed);
        num(o, "registering", n.registering);
        num(o, "unregistering", n.unregistering);
        num(o, "failing", n.failing);
        num(o, "drift", n.drift);
        o.push_str("</tr>");
    }
    o.push_str("</table>");
}

fn traffic(o: &mut String, s: &FarmStatus, history: &History) {
    let st = &s.stats;
    let _ = write!(
        o,
        "<h2>Traffic</h2><table id=\"stats\"><tr><th>transactions</th><th>retransmits</th>\
         <th>timeouts</th><th>challenges</th><th>credential rejected</th><th>queued</th></tr>\
         <tr><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
         <td class=\"n\">{}</td><td class=\"n\">{}</td></tr></table>",
        st.transactions, st.retransmits, st.timeouts, st.challenges, st.credential_rejected, st.queued
    );
    let series = |pick: fn(&Sample) -> u64| -> Vec<f64> {
        history.samples.iter().map(|x| pick(x) as f64).collect()
    };
    let _ = write!(
        o,
        "<table id=\"history\"><tr><th>last hour</th><th>REGISTERs per minute</th><th>live AORs</th>\
         <th>drift</th></tr><tr><td>{} sample(s), every {} s</td><td class=\"spark\">{}</td>\
         <td class=\"spark\">{}</td><td class=\"spark\">{}</td></tr></table>",
        history.samples.len(),
        SAMPLE_EVERY.as_secs(),
        sparkline(&history.per_minute(), 1.0, "rate", "REGISTER transactions per minute"),
        sparkline(&series(|x| x.live_aors), 1.0, "aors", "live AORs"),
        sparkline(&series(|x| x.drift), 1.0, "drift", "bindings in drift"),
    );
}

fn bindings(o: &mut String, s: &FarmStatus, list: &BindingList) {
    let _ = write!(
        o,
        "<h2>Bindings</h2><form method=\"get\" action=\"/status\" id=\"search\">\
         <input type=\"search\" name=\"user\" placeholder=\"user (prefix)\" value=\"{}\"> \
         <select name=\"sort\">",
        esc(&list.user_prefix)
    );
    for sort in BindingSort::ALL {
        let _ = write!(
            o,
            "<option value=\"{0}\"{1}>{0}</option>",
            sort.as_str(),
            if sort == list.sort { " selected" } else { "" }
        );
    }
    o.push_str("</select> <button>show</button></form>");
    let head = |sort: BindingSort, text: &str| {
        format!(
            "<th><a class=\"sort{}\" href=\"/status?user={}&amp;sort={}\">{text}</a></th>",
            if sort == list.sort { " on" } else { "" },
            enc(&list.user_prefix),
            sort.as_str()
        )
    };
    let _ = write!(
        o,
        "<table id=\"bindings\"><tr>{}{}{}{}<th>last result</th>{}</tr>",
        head(BindingSort::User, "user"),
        head(BindingSort::Node, "node"),
        head(BindingSort::Problems, "state"),
        head(BindingSort::Age, "waiting"),
        head(BindingSort::Next, "next action")
    );
    for b in &s.bindings {
        let _ = write!(
            o,
            "<tr class=\"binding\"><td>{}</td><td>{}</td><td class=\"{2}\">{2}</td>\
             <td class=\"n waiting\">{3}</td><td>{4}</td><td class=\"n\">{5}</td></tr>",
            esc(&b.user),
            esc(&b.node),
            esc(&b.state),
            b.waiting_seconds
                .map_or_else(|| "-".into(), |t| format!("{t:.0} s")),
            esc(&b.last_result),
            b.next_action_seconds
                .map_or_else(|| "-".into(), |t| format!("in {t:.0} s"))
        );
    }
    let shown = s.bindings.len() as u64;
    let _ = write!(
        o,
        "<tr><td colspan=\"6\" id=\"bindings-count\">{shown} of {} matching binding(s) shown \
         ({} in all){}</td></tr></table>",
        s.bindings_matched,
        s.bindings_total,
        if list.user_prefix.is_empty() {
            String::new()
        } else {
            format!(", users starting with {}", esc(&list.user_prefix))
        }
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::digest::Secret;
    use crate::core::mirror::{Credential, MirrorConfig, Transport};
    use crate::core::testing::Sim;

    /// A simulated farm of `nodes` fake registrars, the mirror in realm regmirror.test.
    fn sim(nodes: usize) -> Sim {
        let cfg = MirrorConfig {
            domain: "regmirror.test".into(),
            ..MirrorConfig::default()
        };
        Sim::new(cfg, nodes, Transport::Udp, 1)
    }
    use crate::status::{farm_status, farm_summary, BindingRow, BindingScan, NodeRow};
    use std::time::Duration;

    #[test]
    fn page_escapes_and_lists_nodes() {
        let s = FarmStatus {
            version: "0.1.0".into(),
            live_aors: 1,
            nodes: vec![NodeRow {
                name: "ast<1>".into(),
                address: "10.0.0.1:5060".into(),
                health: "unknown".into(),
                desired: 1,
                confirmed: 1,
                ..Default::default()
            }],
            bindings_total: 1,
            bindings: vec![BindingRow {
                user: "1001".into(),
                node: "ast<1>".into(),
                state: "registered".into(),
                last_result: "200 OK".into(),
                next_action_seconds: Some(570.0),
                waiting_seconds: None,
            }],
            ..Default::default()
        };
        let h = render_html(&s, &History::default(), &BindingList::default());
        assert!(h.contains("ast&lt;1&gt;") && !h.contains("ast<1>"), "{h}");
        assert!(h.contains("http-equiv=\"refresh\""));
        assert!(h.contains("<td class=\"n confirmed\">1</td>"));
    }

    /// The mirror's coverage reaches the JSON and the page: a live user whose credential is
    /// still being looked up is desired and not covered, its wait is the lag.
    #[test]
    fn nodes_show_the_mirrors_coverage_and_lag() {
        let mut s = sim(2);
        s.add_user("1001", Secret::Password("pw".into()));
        let now = s.now;
        s.mirror
            .aor_update(now, "1001", Duration::from_secs(600), None, None);
        s.run_for(Duration::from_millis(2500));
        // (desired, covered, coverage %, lag s) of every node
        let every_node = |f: &FarmStatus, want: (u64, u64, f64, f64)| {
            for n in &f.nodes {
                let got = (n.desired, n.covered, n.coverage_percent, n.lag_seconds);
                assert_eq!(got, want, "{n:?}");
            }
        };
        let f = farm_status(&s.mirror, s.now, |_| "up", &BindingList::none());
        every_node(&f, (1, 0, 0.0, 2.5));
        let h = render_html(&f, &History::default(), &BindingList::default());
        assert!(
            h.contains("<td class=\"n coverage partial\">0%</td>"),
            "{h}"
        );
        assert!(h.contains("<td class=\"n lag\">2.5 s</td>"), "{h}");
        let now = s.now;
        let c = Credential {
            username: "1001".into(),
            secret: Secret::Password("pw".into()),
        };
        s.mirror.set_credential(now, "1001", Some(c));
        s.run_for(Duration::from_secs(1));
        let f = farm_status(&s.mirror, s.now, |_| "up", &BindingList::none());
        every_node(&f, (1, 1, 100.0, 0.0));
        let json = serde_json::to_string(&f).unwrap();
        assert!(
            json.contains("\"coverage_percent\":100.0,\"lag_seconds\":0.0"),
            "{json}"
        );
        let h = render_html(&f, &History::default(), &BindingList::default());
        assert!(h.contains("<td class=\"n coverage full\">100%</td>"), "{h}");
        assert!(h.contains("<td class=\"n lag zero\">0 s</td>"), "{h}");
    }

    /// Sorted by age, the binding that has waited longest comes first with its wait; a
    /// registered one has none and comes after.
    #[test]
    fn bindings_sorted_by_age_show_the_longest_wait_first() {
        let mut s = sim(1);
        s.add_user("1001", Secret::Password("pw".into()));
        let now = s.now;
        // 1001 is registered at once; 1002's stored password is not the node's, so it waits.
        let credential = |user: &str, pw: &str| {
            Some(Credential {
                username: user.into(),
                secret: Secret::Password(pw.into()),
            })
        };
        s.add_user("1002", Secret::Password("pw".into()));
        let expires = Duration::from_secs(600);
        s.mirror
            .aor_update(now, "1002", expires, None, credential("1002", "wrong"));
        s.mirror
            .aor_update(now, "1001", expires, None, credential("1001", "pw"));
        s.run_for(Duration::from_secs(3));
        let list = |sort| BindingList {
            max: 10,
            user_prefix: String::new(),
            sort,
        };
        let by_age = farm_status(&s.mirror, s.now, |_| "up", &list(BindingSort::Age));
        let order: Vec<_> = by_age.bindings.iter().map(|b| b.user.as_str()).collect();
        assert_eq!(order, ["1002", "1001"], "{by_age:?}");
        assert_eq!(by_age.bindings[0].waiting_seconds, Some(3.0));
        assert_eq!(by_age.bindings[1].waiting_seconds, None);
        assert_eq!(by_age.bindings[1].state, "registered");
        let h = render_html(&by_age, &History::default(), &list(BindingSort::Age));
        assert!(h.contains("<td class=\"n waiting\">3 s</td>"), "{h}");
        assert!(
            h.contains("<a class=\"sort on\" href=\"/status?user=&amp;sort=age\">waiting</a>"),
            "{h}"
        );
        let by_user = farm_status(&s.mirror, s.now, |_| "up", &list(BindingSort::User));
        let order: Vec<_> = by_user.bindings.iter().map(|b| b.user.as_str()).collect();
        assert_eq!(order, ["1001", "1002"]);
    }

    /// Users u00..u36, added out of order, registered on two nodes (74 bindings).
    fn thirty_seven_registered() -> Sim {
        let mut s = sim(2);
        for i in 0..37 {
            let u = format!("u{:02}", (i * 17) % 37);
            s.add_user(&u, Secret::Password("pw".into()));
            let c = Credential {
                username: u.clone(),
                secret: Secret::Password("pw".into()),
            };
            let now = s.now;
            s.mirror
                .aor_update(now, &u, Duration::from_secs(600), None, Some(c));
        }
        s.run_for(Duration::from_secs(3));
        s
    }

    /// A list shorter than what matches shows the first in order, and counts every match.
    #[test]
    fn a_short_list_shows_the_first_in_order_of_many() {
        let s = thirty_seven_registered();
        let list = |max, sort| BindingList {
            max,
            user_prefix: "u".into(),
            sort,
        };
        let f = farm_status(&s.mirror, s.now, |_| "up", &list(3, BindingSort::User));
        let got: Vec<_> = f
            .bindings
            .iter()
            .map(|b| (b.user.as_str(), b.node.as_str()))
            .collect();
        assert_eq!(got, [("u00", "ast1"), ("u00", "ast2"), ("u01", "ast1")]);
        assert_eq!((f.bindings_matched, f.bindings_total), (74, 74));
        let f = farm_status(&s.mirror, s.now, |_| "up", &list(4, BindingSort::Node));
        let got: Vec<_> = f
            .bindings
            .iter()
            .map(|b| (b.node.as_str(), b.user.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("ast1", "u00"),
                ("ast1", "u01"),
                ("ast1", "u02"),
                ("ast1", "u03")
            ]
        );
    }

    /// The driver builds a page's list a chunk of the binding table per turn: the rows and the
    /// count are those of a single pass, and the summary itself walks no binding.
    #[test]
    fn a_list_built_in_chunks_is_the_list_built_at_once() {
        let s = thirty_seven_registered();
        for sort in [BindingSort::Problems, BindingSort::User, BindingSort::Node] {
            let list = BindingList {
                max: 4,
                user_prefix: "u".into(),
                sort,
            };
            let whole = farm_status(&s.mirror, s.now, |_| "up", &list);
            let mut chunked = farm_summary(&s.mirror, s.now, |_| "up");
            assert!(chunked.bindings.is_empty());
            let mut scan = BindingScan::new(list);
            let mut turns = 1;
            while !scan.advance(&s.mirror, s.now, 5) {
                turns += 1;
            }
            scan.finish(&s.mirror, s.now, &mut chunked);
            assert_eq!(turns, s.mirror.binding_slots().div_ceil(5));
            assert_eq!(chunked.bindings, whole.bindings);
            assert_eq!(chunked.bindings_matched, 74);
        }
    }

    #[test]
    fn history_draws_the_last_hour_and_forgets_what_is_older() {
        let mut h = History::default();
        let mut f = FarmStatus {
            nodes: vec![NodeRow {
                name: "ast1".into(),
                coverage_percent: 50.0,
                lag_seconds: 4.0,
                ..Default::default()
            }],
            ..Default::default()
        };
        for i in 0..SAMPLES + 10 {
            f.stats.transactions = i as u64 * 5;
            h.push(&f);
        }
        assert_eq!(h.samples.len(), SAMPLES);
        assert_eq!(h.node("ast1", |c, _| c).len(), SAMPLES);
        // 5 transactions per 10 s sample: 30 per minute.
        assert!(h.per_minute().iter().all(|r| *r == 30.0));
        let page = render_html(&f, &h, &BindingList::default());
        assert_eq!(page.matches("<svg class=\"spark").count(), 5, "{page}");
        assert!(page.contains("<title>ast1 lag, last hour (s)</title>"));
        // Half coverage draws at mid height: y = 31 - 0.5 * 30.
        assert!(page.contains(",16.0"), "{page}");
    }
}
