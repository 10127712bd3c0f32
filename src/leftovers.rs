//! What is in Asterisk that no running call of this instance owns: calls an earlier voicebot1
//! left (restart, upgrade, crash), and resources of requests that timed out.
//!
//! At start-up voicebot1 *adopts* what can go on: its ids encode the call (`<app>-<call>-bridge`,
//! `-media`, `-dest`, the caller's own id), so the listing of channels and bridges is enough to
//! rebuild each call's phase with no state file (see [`plan`]). A connected caller and destination
//! keep talking; a caller with the bot goes on to the transfer; a ringing destination is waited
//! for. What cannot go on (half-made set-ups, lone legs, empty bridges) is removed. A caller who
//! entered the application while no instance ran (its StasisStart was never read) starts a call.
//!
//! While running, the janitor ([`sweep`]) removes resources with our prefix whose call is not
//! active, retries the hang-ups that failed (`Shared::unconfirmed`), and gives a caller waiting in
//! the application with no call its call.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use crossbeam_channel::Receiver;
use log::{debug, info, warn};

use crate::ari::{AriError, Bridge, Channel, ErrorKind, HangupReason};
use crate::call::Adopted;
use crate::dispatch::{CallMsg, NewCaller, Scheduler};
use crate::ids::{CallId, Ids, Role};
use crate::intake;
use crate::shared::Shared;

/// How soon the janitor looks again while something is left to remove or to confirm.
pub const JANITOR_RETRY: Duration = Duration::from_secs(5);

/// What start-up does with one call found in Asterisk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Goes on as a call of this instance.
    Adopt {
        how: Adopted,
        caller: Box<Channel>,
        media: bool,
        dest_name: Option<String>,
    },
    /// A caller in the application with no bridge and nothing of ours: its call never started.
    Start(Box<Channel>),
    /// Cannot go on: these channels are hung up and this bridge destroyed.
    Remove {
        channels: Vec<String>,
        bridge: Option<String>,
    },
}

/// One call's resources as listed.
#[derive(Debug, Default)]
struct Parts<'a> {
    caller: Option<&'a Channel>,
    media: Option<&'a Channel>,
    dest: Option<&'a Channel>,
    bridge: Option<&'a Bridge>,
}

/// Whether `ch` is in `Stasis(app,…)` (its dialplan position is the Stasis application), and with
/// which first argument.
fn stasis_arg<'a>(ch: &'a Channel, app: &str) -> Option<&'a str> {
    let d = ch.dialplan.as_ref()?;
    if !d.app_name.eq_ignore_ascii_case("Stasis") {
        return None;
    }
    let mut args = d.app_data.split(',').map(str::trim);
    (args.next() == Some(app)).then(|| args.next().unwrap_or(""))
}

/// Decides, for every call found in the listings, whether it is adopted, started or removed.
/// Channels and bridges that are not voicebot1's (other applications, other arguments) are left
/// alone.
pub fn plan(
    ids: &Ids,
    app: &str,
    inbound_arg: &str,
    channels: &[Channel],
    bridges: &[Bridge],
) -> Vec<(CallId, Found)> {
    let mut calls: BTreeMap<CallId, Parts> = BTreeMap::new();
    for ch in channels {
        let (call, role) = ids.classify_channel(&ch.id);
        match role {
            Role::Media => calls.entry(call).or_default().media = Some(ch),
            Role::Dest => calls.entry(call).or_default().dest = Some(ch),
            Role::Caller => {
                // A caller is ours if it is in our application with the inbound argument.
                if stasis_arg(ch, app) == Some(inbound_arg) {
                    calls.entry(call).or_default().caller = Some(ch);
                }
            }
        }
    }
    for b in bridges {
        if let Some(call) = ids.classify_bridge(&b.id) {
            calls.entry(call).or_default().bridge = Some(b);
        }
    }
    calls
        .into_iter()
        .map(|(call, parts)| {
            let found = decide(&call, &parts);
            (call, found)
        })
        .collect()
}

fn decide(call: &CallId, p: &Parts) -> Found {
    let in_bridge = |ch: Option<&Channel>| match (ch, p.bridge) {
        (Some(ch), Some(b)) => b.channels.contains(&ch.id),
        _ => false,
    };
    let remove = || Found::Remove {
        channels: [p.caller, p.media, p.dest]
            .into_iter()
            .flatten()
            .map(|c| c.id.clone())
            .collect(),
        bridge: p.bridge.map(|b| b.id.clone()),
    };
    let Some(caller) = p.caller else {
        return remove();
    };
    if p.bridge.is_none() && p.media.is_none() && p.dest.is_none() {
        return Found::Start(Box::new(caller.clone()));
    }
    if !in_bridge(Some(caller)) {
        // Set-up was cut half-way: the bridge id may not be used again (asterisk/asterisk #211),
        // so the call cannot simply start over.
        return remove();
    }
    let how = match p.dest {
        Some(d) if in_bridge(Some(d)) => Adopted::Connected,
        Some(d) if d.state.eq_ignore_ascii_case("Up") => Adopted::DestAnswered,
        Some(_) => Adopted::DestRinging,
        None if p.media.is_some() => Adopted::WithBot,
        // The caller alone in its bridge: the destination hung up while no instance ran.
        None => return remove(),
    };
    debug!("call {call}: found {how:?}");
    Found::Adopt {
        how,
        caller: Box::new(caller.clone()),
        media: p.media.is_some(),
        dest_name: p.dest.map(|d| d.name.clone()),
    }
}

/// At start-up, right after the WebSocket connected: adopts, starts or removes every call found
/// (see [`plan`]). Events read afterwards reach the adopted calls behind their adoption.
///
/// After a reconnect the same runs for the calls this instance does not hold: a caller whose
/// StasisStart was lost while the WebSocket was down is started, not stranded.
pub fn adopt<S: Send>(shared: &Shared, calls: &Scheduler<S>) -> Result<(), AriError> {
    let (ari, ids, cfg) = (&shared.ari, &shared.ids, &shared.config.ari);
    let channels = ari.list_channels()?;
    let bridges = list_bridges(shared, &channels)?;
    // Read after the listings: a call registered since is running here and left alone.
    let active = shared.registry.lock().clone();
    let (mut adopted, mut started, mut removed) = (0, 0, Tally::default());
    for (call, found) in plan(ids, &cfg.app, &cfg.inbound_arg, &channels, &bridges) {
        if active.contains_key(&call) {
            continue;
        }
        match found {
            Found::Adopt {
                how,
                caller,
                media,
                dest_name,
            } => {
                adopted += 1;
                calls.post(
                    call,
                    CallMsg::Adopt {
                        how,
                        caller,
                        media,
                        dest_name,
                    },
                );
            }
            Found::Start(caller) => {
                started += 1;
                info!("call {call}: caller {} was waiting in the application with no call; starting it", caller.name);
                intake::offer(shared, calls, call, Box::new(NewCaller::waiting(*caller)));
            }
            Found::Remove { channels, bridge } => {
                removed.remove(shared, "sweep", &call, channels, bridge)
            }
        }
    }
    info!(
        "sweep: {adopted} calls adopted, {started} waiting callers started, {} leftover channels hung up, {} leftover bridges destroyed",
        removed.hung_up, removed.destroyed
    );
    Ok(())
}

/// What removing leftovers did.
#[derive(Debug, Default)]
struct Tally {
    hung_up: usize,
    destroyed: usize,
    /// A request failed (not a 404): there is something to look at again.
    failed: bool,
}

impl Tally {
    /// Hangs up `call`'s leftover `channels` (its caller with congestion) and destroys its
    /// leftover `bridge`, logging each as `who` and counting it.
    fn remove(
        &mut self,
        shared: &Shared,
        who: &str,
        call: &CallId,
        channels: Vec<String>,
        bridge: Option<String>,
    ) {
        for ch in channels {
            let reason = if ch == call.0 {
                HangupReason::Congestion
            } else {
                HangupReason::Normal
            };
            match removal(
                shared.ari.hangup(&ch, reason),
                who,
                &format!("hung up leftover channel {ch} of call {call}"),
            ) {
                Removal::Removed => self.hung_up += 1,
                Removal::Gone => {}
                Removal::Failed => self.failed = true,
            }
        }
        if let Some(b) = bridge {
            match removal(
                shared.ari.destroy_bridge(&b),
                who,
                &format!("destroyed leftover bridge {b}"),
            ) {
                Removal::Removed => self.destroyed += 1,
                Removal::Gone => {}
                Removal::Failed => self.failed = true,
            }
        }
    }
}

/// `GET /bridges`, or — where Asterisk 18.0–18.7 answers it with 500 while another application
/// on the box has a channel from create+dial (fixed in 18.8) — each of our calls' bridges by id.
fn list_bridges(shared: &Shared, channels: &[Channel]) -> Result<Vec<Bridge>, AriError> {
    let (ari, ids) = (&shared.ari, &shared.ids);
    match ari.list_bridges() {
        Ok(bridges) => Ok(bridges),
        Err(e) if matches!(e.kind, ErrorKind::Status(500..=599, _)) => {
            warn!("{e}; looking up the bridges of voicebot1's calls by id instead");
            let wanted: HashSet<String> = channels
                .iter()
                .map(|c| ids.bridge(&ids.classify_channel(&c.id).0))
                .collect();
            let mut found = Vec::new();
            for id in wanted {
                match ari.get_bridge(&id) {
                    Ok(b) => found.push(b),
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(found)
        }
        Err(e) => Err(e),
    }
}

/// While running: removes what no active call owns, until Asterisk confirms it is gone.
///
/// - Channels whose hang-up failed earlier (`Shared::unconfirmed`, callers included) are hung up
///   again; each stays listed until a hang-up succeeds or Asterisk answers 404.
/// - Calls with resources in Asterisk but not in the registry: a request that timed out but
///   created its resource anyway, a cleanup request that failed. Half-made and lone parts are
///   removed at once (a call registers before it creates anything, and the registry is read
///   after the listings). A caller waiting in the application, or a complete-looking call, must
///   be seen twice in a row (its StasisStart may still be queued for a worker): then a waiting
///   caller gets its call (its StasisStart was lost) and anything else is removed.
///
/// Returns whether something is left to look at again soon.
pub fn sweep<S: Send>(
    shared: &Shared,
    calls: &Scheduler<S>,
    suspects: &mut HashSet<CallId>,
) -> Result<bool, AriError> {
    let (ari, ids, cfg) = (&shared.ari, &shared.ids, &shared.config.ari);
    let unconfirmed = retry_unconfirmed(shared);
    let channels = ari.list_channels()?;
    let bridges = list_bridges(shared, &channels)?;
    // Read after the listings: a call registered later created nothing that is listed, and a
    // call unregistered meanwhile has cleaned up (a second delete is a harmless 404).
    let active = shared.registry.lock().clone();
    let (mut removed, mut started) = (Tally::default(), 0);
    let mut seen = HashSet::new();
    for (call, found) in plan(ids, &cfg.app, &cfg.inbound_arg, &channels, &bridges) {
        if active.contains_key(&call) {
            continue;
        }
        let (channels, bridge) = match found {
            Found::Remove { channels, bridge } => (channels, bridge),
            found if !suspects.contains(&call) => {
                debug!("janitor: call {call} has no running call here ({found:?}); looking again at the next sweep");
                seen.insert(call);
                continue;
            }
            Found::Start(caller) => {
                info!("janitor: call {call}: caller {} is in the application with no call; starting it", caller.name);
                started += 1;
                intake::offer(shared, calls, call, Box::new(NewCaller::waiting(*caller)));
                continue;
            }
            Found::Adopt {
                caller,
                dest_name,
                media,
                ..
            } => {
                let mut legs = vec![caller.id.clone()];
                legs.extend(media.then(|| ids.channel(&call, Role::Media)));
                legs.extend(dest_name.map(|_| ids.channel(&call, Role::Dest)));
                (legs, Some(ids.bridge(&call)))
            }
        };
        removed.remove(shared, "janitor", &call, channels, bridge);
    }
    if removed.hung_up + removed.destroyed + started > 0 {
        info!(
            "janitor: {} leftover channels hung up, {} leftover bridges destroyed, {started} waiting callers started",
            removed.hung_up, removed.destroyed
        );
    }
    *suspects = seen;
    Ok(unconfirmed || removed.failed || !suspects.is_empty())
}

/// Hangs up again every channel whose hang-up failed; true if some are still not confirmed gone.
fn retry_unconfirmed(shared: &Shared) -> bool {
    let pending: Vec<String> = shared.unconfirmed.lock().iter().cloned().collect();
    let mut left = false;
    for ch in pending {
        match removal(
            shared.ari.hangup(&ch, HangupReason::Normal),
            "janitor",
            &format!("hung up {ch}, whose earlier hang-up had failed"),
        ) {
            Removal::Removed | Removal::Gone => {
                shared.unconfirmed.lock().remove(&ch);
            }
            Removal::Failed => left = true,
        }
    }
    left
}

enum Removal {
    Removed,
    /// 404: it was gone already.
    Gone,
    Failed,
}

fn removal(result: Result<(), AriError>, who: &str, what: &str) -> Removal {
    match result {
        Ok(()) => {
            info!("{who}: {what}");
            Removal::Removed
        }
        Err(e) if e.is_not_found() => Removal::Gone,
        Err(e) => {
            warn!("{who}: {e}");
            Removal::Failed
        }
    }
}

/// Runs [`sweep`] every `every` until `stop` disconnects; every [`JANITOR_RETRY`] while something
/// is left to confirm.
pub fn janitor<S: Send>(
    shared: &Shared,
    calls: &Scheduler<S>,
    stop: &Receiver<()>,
    every: Duration,
) {
    let mut suspects = HashSet::new();
    let mut wait = every;
    while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stop.recv_timeout(wait) {
        wait = match sweep(shared, calls, &mut suspects) {
            Ok(true) => JANITOR_RETRY.min(every),
            Ok(false) => every,
            Err(e) => {
                debug!("janitor: {e}");
                JANITOR_RETRY.min(every)
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(id: &str, state: &str, stasis: Option<&str>) -> Channel {
        let dialplan = stasis.map(|data| format!(r#","dialplan":{{"context":"c","exten":"s","app_name":"Stasis","app_data":"{data}"}}"#));
        serde_json::from_str(&format!(
            r#"{{"id":"{id}","name":"PJSIP/x-{id}","state":"{state}"{}}}"#,
            dialplan.unwrap_or_default()
        ))
        .unwrap()
    }

    fn br(id: &str, members: &[&str]) -> Bridge {
        Bridge {
            id: id.into(),
            channels: members.iter().map(|m| m.to_string()).collect(),
        }
    }

    fn found(channels: &[Channel], bridges: &[Bridge]) -> Vec<(String, Found)> {
        plan(&Ids::new("vb"), "vb", "inbound", channels, bridges)
            .into_iter()
            .map(|(c, f)| (c.0, f))
            .collect()
    }

    fn how(f: &Found) -> Option<Adopted> {
        match f {
            Found::Adopt { how, .. } => Some(*how),
            _ => None,
        }
    }

    const CALLER: Option<&str> = Some("vb,inbound");

    #[test]
    fn a_connected_call_is_adopted_as_connected() {
        let f = found(
            &[
                ch("1", "Up", CALLER),
                ch("vb-1-dest", "Up", Some("vb,transfer,1")),
            ],
            &[br("vb-1-bridge", &["1", "vb-1-dest"])],
        );
        assert_eq!(f.len(), 1);
        assert_eq!(how(&f[0].1), Some(Adopted::Connected));
    }

    #[test]
    fn a_transfer_in_progress_is_adopted_by_the_destination_state() {
        let ringing = found(
            &[ch("2", "Up", CALLER), ch("vb-2-dest", "Ringing", None)],
            &[br("vb-2-bridge", &["2"])],
        );
        assert_eq!(how(&ringing[0].1), Some(Adopted::DestRinging));
        let answered = found(
            &[
                ch("3", "Up", CALLER),
                ch("vb-3-dest", "Up", Some("vb,transfer,3")),
            ],
            &[br("vb-3-bridge", &["3"])],
        );
        assert_eq!(how(&answered[0].1), Some(Adopted::DestAnswered));
    }

    #[test]
    fn a_caller_with_the_bot_is_adopted_to_be_transferred() {
        let f = found(
            &[ch("4", "Up", CALLER), ch("vb-4-media", "Up", Some("vb"))],
            &[br("vb-4-bridge", &["4", "vb-4-media"])],
        );
        assert!(matches!(
            &f[0].1,
            Found::Adopt {
                how: Adopted::WithBot,
                media: true,
                ..
            }
        ));
    }

    #[test]
    fn half_made_set_ups_and_lone_legs_are_removed() {
        // Caller not yet in its bridge.
        let f = found(&[ch("5", "Up", CALLER)], &[br("vb-5-bridge", &[])]);
        assert_eq!(
            f[0].1,
            Found::Remove {
                channels: vec!["5".into()],
                bridge: Some("vb-5-bridge".into())
            }
        );
        // The caller alone in its bridge: the destination hung up while no instance ran.
        let f = found(&[ch("6", "Up", CALLER)], &[br("vb-6-bridge", &["6"])]);
        assert!(
            matches!(&f[0].1, Found::Remove { channels, .. } if channels == &vec!["6".to_string()])
        );
        // A destination whose caller is gone, an empty bridge.
        let f = found(
            &[ch("vb-7-dest", "Up", None)],
            &[br("vb-7-bridge", &["vb-7-dest"]), br("vb-8-bridge", &[])],
        );
        assert_eq!(
            f[0].1,
            Found::Remove {
                channels: vec!["vb-7-dest".into()],
                bridge: Some("vb-7-bridge".into())
            }
        );
        assert_eq!(
            f[1].1,
            Found::Remove {
                channels: vec![],
                bridge: Some("vb-8-bridge".into())
            }
        );
    }

    #[test]
    fn a_waiting_caller_starts_a_call_and_strangers_are_left_alone() {
        let f = found(
            &[
                ch("9", "Up", CALLER),
                ch("10", "Up", Some("vb,other")),
                ch("11", "Up", Some("otherapp,inbound")),
                ch("12", "Up", None),
            ],
            &[br("other-bridge", &["12"])],
        );
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(matches!(&f[0].1, Found::Start(c) if c.id == "9"));
    }
}
