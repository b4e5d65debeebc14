//! CloudWatch Logs events (FilterLogEvents), derived from task timelines: nothing is
//! stored, every event is a pure function of a task (id, image, when it ran) and of the
//! period between lines.
//!
//! Each task that ran writes, in stream `wordpress/wordpress/{taskId}`:
//! * at RUNNING (sequence 0): a startup line containing `WordPress {version} ready`;
//! * every `period` after that (tick `n` ≥ 1, sequence `2n`): an Apache access line;
//! * now and then (1 tick in [`ERROR_ONE_IN`], from the task id and the tick, sequence
//!   `2n + 1`, same timestamp): a `PHP Warning`.
//!
//! It stops writing when it is asked to stop (`stop_at`, exclusive).
//!
//! Invariants:
//! * Events are ordered by position `(timestamp, stream, sequence)`; within a stream the
//!   sequence alone orders them, and timestamps never decrease with it.
//! * A page is found by a k-way merge over the tasks, starting each task at its first
//!   event after the cursor (O(1) arithmetic), and stops after `limit + 1` events: work and
//!   memory are bounded by the number of tasks and `limit`, never by the window.
//! * A page token is the position of the last event returned; the next page starts
//!   strictly after it, so paging returns every event of the window exactly once.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::clock::{Millis, mix, stable_hash};
use crate::cloud::LogEvent;
use crate::model::Timestamp;

/// On average one tick in this many also writes a PHP warning.
pub(super) const ERROR_ONE_IN: u64 = 25;

/// Salt of the warning draws, so they are independent of the access-line draws.
const WARNING_SALT: u64 = 0x5741_524e;

const TOKEN_VERSION: &str = "v1";

/// One task as a writer of log lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Source {
    stream: String,
    seed: u64,
    version: String,
    php: String,
    running_at: Millis,
    stop_at: Option<Millis>,
}

/// Which events a query wants: timestamps within `from..=to`, lines `period` apart.
#[derive(Debug, Clone, Copy)]
pub(super) struct Window {
    pub from: Millis,
    pub to: Millis,
    /// Milliseconds between two access lines of one task; at least 1.
    pub period: Millis,
}

/// Where an event is in the order of all events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Position {
    pub ts: Millis,
    pub stream: String,
    pub seq: u64,
}

impl Position {
    /// The opaque page token of this position.
    pub fn token(&self) -> String {
        let plain = format!("{TOKEN_VERSION}:{}:{}:{}", self.ts, self.seq, self.stream);
        URL_SAFE_NO_PAD.encode(plain)
    }

    /// The position a token names; `None` if it is not one of ours.
    pub fn parse(token: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
        let plain = String::from_utf8(bytes).ok()?;
        let mut parts = plain.splitn(4, ':');
        if parts.next()? != TOKEN_VERSION {
            return None;
        }
        let ts = parts.next()?.parse().ok()?;
        let seq = parts.next()?.parse().ok()?;
        let stream = parts.next()?;
        (!stream.is_empty()).then(|| Position {
            ts,
            stream: stream.to_owned(),
            seq,
        })
    }
}

impl Source {
    pub fn new(task_id: &str, image: &str, running_at: Millis, stop_at: Option<Millis>) -> Self {
        Self {
            stream: format!("wordpress/wordpress/{task_id}"),
            seed: stable_hash(task_id),
            version: wordpress_version(image),
            php: php_version(image),
            running_at,
            stop_at,
        }
    }

    /// The timestamp of tick `n`, if representable.
    fn tick_ts(&self, n: u64, period: Millis) -> Option<Millis> {
        let offset = i64::try_from(n).ok()?.checked_mul(period)?;
        self.running_at.checked_add(offset)
    }

    fn warns_at(&self, n: u64) -> bool {
        n >= 1 && mix(self.seed ^ WARNING_SALT, n).is_multiple_of(ERROR_ONE_IN)
    }

    /// The first event of this stream at sequence `seq` or later, with its timestamp;
    /// `None` once past the window or the task's stop.
    fn at_or_after(&self, seq: u64, w: &Window) -> Option<(u64, Millis)> {
        let seq = if seq % 2 == 1 && !self.warns_at(seq / 2) {
            seq.checked_add(1)?
        } else {
            seq
        };
        let ts = self.tick_ts(seq / 2, w.period)?;
        (ts <= w.to && self.stop_at.is_none_or(|s| ts < s)).then_some((seq, ts))
    }

    /// The first event within the window and strictly after `after`.
    fn first(&self, w: &Window, after: Option<&Position>) -> Option<(u64, Millis)> {
        let order = after.map(|c| (c, self.stream.cmp(&c.stream)));
        let min_ts = match order {
            // Strictly later; nothing is later than the end of time.
            Some((c, Ordering::Less)) => w.from.max(c.ts.checked_add(1)?),
            Some((c, Ordering::Greater)) => w.from.max(c.ts),
            Some((_, Ordering::Equal)) | None => w.from,
        };
        let delta = min_ts.saturating_sub(self.running_at).max(0);
        let ticks = delta / w.period + i64::from(delta % w.period != 0);
        let mut seq = u64::try_from(ticks).ok()?.saturating_mul(2);
        if let Some((c, Ordering::Equal)) = order {
            seq = seq.max(c.seq.checked_add(1)?);
        }
        self.at_or_after(seq, w)
    }

    fn message(&self, seq: u64, ts: Millis) -> String {
        let n = seq / 2;
        if seq % 2 == 1 {
            self.php_warning(n, ts)
        } else if n == 0 {
            format!(
                "[{}] [mpm_prefork:notice] [pid 1] AH00163: Apache/2.4.62 (Debian) \
                 PHP/{} configured -- WordPress {} ready",
                error_log_time(ts),
                self.php,
                self.version
            )
        } else {
            self.access_line(n, ts)
        }
    }

    fn access_line(&self, n: u64, ts: Millis) -> String {
        const REQUESTS: [(&str, &str); 10] = [
            ("GET", "/"),
            ("GET", "/"),
            ("GET", "/wp-login.php"),
            ("POST", "/wp-admin/admin-ajax.php"),
            ("GET", "/wp-json/wp/v2/posts?per_page=10"),
            ("GET", "/feed/"),
            ("GET", "/wp-content/uploads/2025/01/header.jpg"),
            ("GET", "/?p=42"),
            ("POST", "/wp-cron.php?doing_wp_cron"),
            ("GET", "/xmlrpc.php"),
        ];
        const AGENTS: [&str; 4] = [
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15",
            "ELB-HealthChecker/2.0",
            "WordPress/6.6; https://example.org",
        ];
        let r = mix(self.seed, n);
        let (method, path) = REQUESTS[pick(r >> 24, REQUESTS.len())];
        let status = match (r >> 32) % 20 {
            0 => 404,
            1 | 2 => 304,
            3 => 301,
            _ => 200,
        };
        let bytes = if status == 304 {
            0
        } else {
            300 + (r >> 40) % 60_000
        };
        format!(
            "10.0.{}.{} - - [{}] \"{method} {path} HTTP/1.1\" {status} {bytes} \"-\" \"{}\"",
            (r >> 8) % 4,
            2 + (r >> 16) % 250,
            access_log_time(ts),
            AGENTS[pick(r >> 56, AGENTS.len())]
        )
    }

    fn php_warning(&self, n: u64, ts: Millis) -> String {
        const WARNINGS: [(&str, &str, u32); 4] = [
            (
                "Undefined array key \"HTTP_REFERER\"",
                "/var/www/html/wp-content/themes/twentytwentyfour/functions.php",
                42,
            ),
            (
                "Attempt to read property \"post_title\" on null",
                "/var/www/html/wp-content/plugins/related-posts/related.php",
                118,
            ),
            (
                "foreach() argument must be of type array|object, null given",
                "/var/www/html/wp-content/plugins/seo-tools/sitemap.php",
                77,
            ),
            (
                "file_get_contents(/tmp/wp-cache.lock): Failed to open stream: No such file \
                 or directory",
                "/var/www/html/wp-includes/class-wp-cache.php",
                305,
            ),
        ];
        let r = mix(self.seed ^ WARNING_SALT, n.wrapping_add(1 << 40));
        let (text, file, line) = WARNINGS[pick(r, WARNINGS.len())];
        format!(
            "[{}] [php:warn] [pid {}] [client 10.0.{}.{}:{}] PHP Warning:  {text} in {file} \
             on line {line}",
            error_log_time(ts),
            20 + (r >> 8) % 200,
            (r >> 16) % 4,
            2 + (r >> 24) % 250,
            32_768 + (r >> 32) % 28_000
        )
    }
}

/// An index below `len` from a draw (`len` > 0).
fn pick(r: u64, len: usize) -> usize {
    usize::try_from(r % len as u64).unwrap_or(0)
}

/// `8.3` of `wordpress:6.6-php8.3-apache`; `8.x` when the tag does not say.
fn php_version(image: &str) -> String {
    image
        .split("-php")
        .nth(1)
        .and_then(|rest| rest.split('-').next())
        .filter(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || c == '.'))
        .unwrap_or("8.x")
        .to_owned()
}

/// `6.6` of `wordpress:6.6-php8.3`; `6.x` when the tag is not a version.
fn wordpress_version(image: &str) -> String {
    let tag = image.rsplit_once(':').map_or("", |(_, tag)| tag);
    let version = tag.split('-').next().unwrap_or("");
    let looks_like_version = version.starts_with(|c: char| c.is_ascii_digit())
        && version.chars().all(|c| c.is_ascii_digit() || c == '.');
    if looks_like_version {
        version.to_owned()
    } else {
        "6.x".to_owned()
    }
}

fn access_log_time(ts: Millis) -> String {
    Timestamp::from_timestamp_millis(ts)
        .map(|t| t.format("%d/%b/%Y:%H:%M:%S +0000").to_string())
        .unwrap_or_default()
}

fn error_log_time(ts: Millis) -> String {
    Timestamp::from_timestamp_millis(ts)
        .map(|t| t.format("%a %b %d %H:%M:%S%.6f %Y").to_string())
        .unwrap_or_default()
}

/// The events of `sources` within `window` and after `after`, in order, at most `limit`;
/// plus the position to continue after, when there are more.
pub(super) fn page(
    mut sources: Vec<Source>,
    window: &Window,
    after: Option<&Position>,
    limit: usize,
) -> (Vec<LogEvent>, Option<Position>) {
    if window.period < 1 || window.from > window.to || limit == 0 {
        return (Vec::new(), None);
    }
    // Sorted by stream, the index orders like the stream name does; one source per stream
    // (a task both in its service and its history counts once).
    sources.sort_by(|a, b| a.stream.cmp(&b.stream));
    sources.dedup_by(|a, b| a.stream == b.stream);
    let mut heap: BinaryHeap<Reverse<(Millis, usize, u64)>> = sources
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            s.first(window, after)
                .map(|(seq, ts)| Reverse((ts, i, seq)))
        })
        .collect();
    let mut picked: Vec<(Millis, usize, u64)> = Vec::new();
    let mut more = false;
    while let Some(Reverse((ts, i, seq))) = heap.pop() {
        if picked.len() == limit {
            more = true;
            break;
        }
        picked.push((ts, i, seq));
        let next = seq
            .checked_add(1)
            .and_then(|s| sources[i].at_or_after(s, window));
        if let Some((seq, ts)) = next {
            heap.push(Reverse((ts, i, seq)));
        }
    }
    let next = match picked.last() {
        Some(&(ts, i, seq)) if more => Some(Position {
            ts,
            stream: sources[i].stream.clone(),
            seq,
        }),
        _ => None,
    };
    let events = picked
        .into_iter()
        .map(|(ts, i, seq)| LogEvent {
            timestamp: Timestamp::from_timestamp_millis(ts).unwrap_or_default(),
            message: sources[i].message(seq, ts),
            log_stream: sources[i].stream.clone(),
        })
        .collect();
    (events, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Millis = 1_700_000_000_000;

    fn window(from: Millis, to: Millis) -> Window {
        Window {
            from,
            to,
            period: 10,
        }
    }

    fn all(sources: &[Source], w: &Window) -> Vec<LogEvent> {
        page(sources.to_vec(), w, None, usize::MAX).0
    }

    fn sources() -> Vec<Source> {
        vec![
            Source::new("bbbb", "wordpress:6.6-php8.3", T0, None),
            Source::new("aaaa", "wordpress:6.6-php8.3", T0 + 5, Some(T0 + 500)),
            Source::new("cccc", "wordpress:latest", T0 + 10, Some(T0 + 10)),
        ]
    }

    #[test]
    fn lines_follow_the_timelines() {
        let w = window(T0, T0 + 1_000);
        let events = all(&sources(), &w);
        let of = |id: &str| -> Vec<&LogEvent> {
            events
                .iter()
                .filter(|e| e.log_stream == format!("wordpress/wordpress/{id}"))
                .collect()
        };
        assert!(of("cccc").is_empty(), "never ran");
        let a = of("aaaa");
        assert!(
            a[0].message.contains("WordPress 6.6 ready"),
            "{}",
            a[0].message
        );
        assert!(a.iter().all(|e| e.timestamp.timestamp_millis() < T0 + 500));
        let b = of("bbbb");
        let access = b.iter().filter(|e| e.message.contains("HTTP/1.1")).count();
        assert_eq!(access, 100, "ticks 1..=100 within a second at 10 ms");
        let warnings = b
            .iter()
            .filter(|e| e.message.contains("PHP Warning"))
            .count();
        assert_eq!(b.len(), 1 + access + warnings);
        let mut sorted = events.clone();
        sorted.sort_by(|x, y| (x.timestamp, &x.log_stream).cmp(&(y.timestamp, &y.log_stream)));
        assert_eq!(
            sorted
                .iter()
                .map(|e| (e.timestamp, &e.log_stream))
                .collect::<Vec<_>>(),
            events
                .iter()
                .map(|e| (e.timestamp, &e.log_stream))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn warnings_come_now_and_then() {
        let src = Source::new("deadbeef", "wp:1", T0, None);
        let n = (1..=10_000u64).filter(|&n| src.warns_at(n)).count();
        assert!((250..550).contains(&n), "{n}");
        assert!(!src.warns_at(0), "the startup tick never warns");
    }

    #[test]
    fn paging_returns_every_event_exactly_once() {
        let w = window(T0 + 3, T0 + 700);
        let whole = all(&sources(), &w);
        assert!(whole.len() > 100);
        for limit in [1, 2, 7, 50] {
            let mut got = Vec::new();
            let mut after: Option<Position> = None;
            loop {
                let (events, next) = page(sources(), &w, after.as_ref(), limit);
                assert!(events.len() <= limit);
                got.extend(events);
                match next {
                    Some(p) => after = Some(Position::parse(&p.token()).expect("token")),
                    None => break,
                }
            }
            assert_eq!(got, whole, "limit {limit}");
        }
    }

    #[test]
    fn huge_windows_cost_only_the_limit() {
        let w = Window {
            from: 0,
            to: i64::MAX,
            period: 1,
        };
        let (events, next) = page(sources(), &w, None, 5);
        assert_eq!(events.len(), 5);
        let next = next.expect("more");
        let (again, _) = page(sources(), &w, Some(&next), 5);
        assert!(again[0].timestamp >= events[4].timestamp);
        // A cursor at the very end of time has nothing after it, and does not overflow.
        let end = Position {
            ts: i64::MAX,
            stream: "zzz".into(),
            seq: u64::MAX,
        };
        assert!(page(sources(), &w, Some(&end), 5).0.is_empty());
    }

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        let p = Position {
            ts: T0,
            stream: "wordpress/wordpress/ab:cd".into(),
            seq: 17,
        };
        assert_eq!(Position::parse(&p.token()), Some(p));
        for bad in ["", "!!!", "djE6MTIz", &URL_SAFE_NO_PAD.encode("v2:1:2:s")] {
            assert_eq!(Position::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn versions_come_from_the_image_tag() {
        assert_eq!(wordpress_version("wordpress:6.6-php8.3"), "6.6");
        assert_eq!(wordpress_version("wordpress:6.7.1"), "6.7.1");
        assert_eq!(wordpress_version("wordpress:latest"), "6.x");
        assert_eq!(wordpress_version("registry:5000/wordpress"), "6.x");
        assert_eq!(wordpress_version("wordpress"), "6.x");
        assert_eq!(php_version("wordpress:6.6-php8.2-apache"), "8.2");
        assert_eq!(php_version("wordpress:6.6"), "8.x");
    }
}
