//! Choosing relays. Anonymity comes first: each key gets its own relay, distinct from every
//! other assignment whenever enough relays are known. Among the allowed relays the least
//! loaded wins, judged by what the relay reports *and* by our own latency and failure figures
//! (so a relay cannot win by lying), with jitter so that clients do not all pile onto one.

use std::collections::HashSet;

use rand::Rng;

use crate::store::RelayRow;

/// Lower is better.
pub fn cost(row: &RelayRow) -> f64 {
    let i = &row.info;
    let latency = i.latency_ms.unwrap_or(250.0).max(1.0);
    let attempts = (i.successes + i.failures) as f64;
    let failure_rate = if attempts > 0.0 {
        i.failures as f64 / attempts
    } else {
        0.0
    };
    let reported = i.reported_load.unwrap_or(1.0).max(0.0);
    let misbehaviour = (i.forged + i.lost) as f64;
    latency * (1.0 + 4.0 * failure_rate) * (1.0 + reported / 10.0) * (1.0 + misbehaviour)
}

/// Picks a relay for a new assignment. `taken` are relays already assigned to other keys
/// (avoided when possible), `forbidden` those that must not be used for this role when any
/// other exists (TX relays never double as RX and vice versa), `exclude` those ruled out
/// outright (the relay being replaced). Without `fallback`, only a relay neither taken nor
/// forbidden will do (anonymity `strict`); with it, a taken one rather than none, then a
/// forbidden one rather than none (`relaxed`: the caller reports the sharing).
pub fn choose(
    rows: &[RelayRow],
    taken: &HashSet<String>,
    forbidden: &HashSet<String>,
    exclude: &HashSet<String>,
    fallback: bool,
) -> Option<String> {
    let usable: Vec<&RelayRow> = rows
        .iter()
        .filter(|r| !exclude.contains(&r.info.address))
        .collect();
    let healthy: Vec<&RelayRow> = usable.iter().copied().filter(|r| !r.info.suspect).collect();
    let pool = if healthy.is_empty() { usable } else { healthy };
    // Tier 0: free and allowed; 1: allowed though taken; 2: anything rather than nothing.
    let in_tier = |tier: usize, r: &RelayRow| match tier {
        0 => !taken.contains(&r.info.address) && !forbidden.contains(&r.info.address),
        1 => !forbidden.contains(&r.info.address),
        _ => true,
    };
    let mut rng = rand::rng();
    let tiers = if fallback { 3 } else { 1 };
    for tier in 0..tiers {
        let candidates: Vec<&&RelayRow> = pool.iter().filter(|r| in_tier(tier, r)).collect();
        if let Some(best) = candidates
            .iter()
            .map(|r| (cost(r) * rng.random_range(0.8..1.25), r))
            .min_by(|a, b| a.0.total_cmp(&b.0))
        {
            return Some(best.1.info.address.clone());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RelayInfo;

    fn row(addr: &str, latency: f64, load: f64) -> RelayRow {
        RelayRow {
            info: RelayInfo {
                address: addr.into(),
                origin: "configured".into(),
                reported_load: Some(load),
                latency_ms: Some(latency),
                successes: 10,
                failures: 0,
                forged: 0,
                lost: 0,
                suspect: false,
                supports_wait: true,
                roles: vec![],
            },
            suspect_until: None,
        }
    }

    fn set(items: &[&str]) -> HashSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn distinct_relays_while_enough_are_known() {
        let rows = vec![
            row("a:1", 10.0, 0.0),
            row("b:1", 10.0, 0.0),
            row("c:1", 10.0, 0.0),
        ];
        for _ in 0..50 {
            let got = choose(&rows, &set(&["a:1"]), &set(&["b:1"]), &set(&[]), true).unwrap();
            assert_eq!(got, "c:1");
        }
        // Not enough relays and no fallback (strict): none.
        assert_eq!(
            choose(
                &rows,
                &set(&["a:1", "c:1"]),
                &set(&["b:1"]),
                &set(&[]),
                false
            ),
            None
        );
        // With the fallback (relaxed): reuse a taken one, but still never the forbidden one.
        let got = choose(
            &rows,
            &set(&["a:1", "c:1"]),
            &set(&["b:1"]),
            &set(&[]),
            true,
        )
        .unwrap();
        assert_ne!(got, "b:1");
        // Only the forbidden one left: better than nothing.
        let got = choose(&rows[1..2], &set(&[]), &set(&["b:1"]), &set(&[]), true).unwrap();
        assert_eq!(got, "b:1");
    }

    #[test]
    fn least_loaded_and_fastest_wins_and_suspects_are_avoided() {
        let mut rows = vec![
            row("slow:1", 400.0, 0.0),
            row("busy:1", 10.0, 200.0),
            row("good:1", 12.0, 0.5),
        ];
        assert_eq!(
            choose(&rows, &set(&[]), &set(&[]), &set(&[]), true).unwrap(),
            "good:1"
        );
        rows[2].info.suspect = true;
        assert_ne!(
            choose(&rows, &set(&[]), &set(&[]), &set(&[]), true).unwrap(),
            "good:1"
        );
        // A relay claiming zero load but failing our requests loses.
        let mut liar = row("liar:1", 10.0, 0.0);
        liar.info.failures = 30;
        let honest = row("honest:1", 15.0, 2.0);
        assert_eq!(
            choose(&[liar, honest], &set(&[]), &set(&[]), &set(&[]), true).unwrap(),
            "honest:1"
        );
    }
}
