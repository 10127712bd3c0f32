//! The ids voicebot1 gives to what it creates in Asterisk, and the way back from an id to its call.
//!
//! A call's id is its caller's channel id (Asterisk's unique id, e.g. `1764000000.17`, unique for
//! the life of the Asterisk process and beyond). Everything voicebot1 creates for the call is named
//! `<app>-<call id>-<role>`, chosen by voicebot1 before the REST request, so that any event (even
//! one that arrives before the REST response that created its channel) can be routed to its call
//! by its id alone, with no shared map. The `<app>-` prefix also lets a restarted voicebot1 find
//! and remove what an earlier instance left behind.

use std::fmt;

/// The id of one call: its caller's channel id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub String);

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which party of a call a channel is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The inbound caller; its channel id is the call id.
    Caller,
    /// The externalMedia channel towards the bot.
    Media,
    /// The channel originated to the transfer destination.
    Dest,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Caller => "caller",
            Role::Media => "media",
            Role::Dest => "destination",
        }
    }
}

/// Names things for one Stasis application.
#[derive(Debug, Clone)]
pub struct Ids {
    prefix: String,
}

const MEDIA: &str = "media";
const DEST: &str = "dest";
const BRIDGE: &str = "bridge";

impl Ids {
    pub fn new(app: &str) -> Ids {
        Ids {
            prefix: format!("{app}-"),
        }
    }

    pub fn bridge(&self, call: &CallId) -> String {
        format!("{}{}-{BRIDGE}", self.prefix, call.0)
    }

    pub fn channel(&self, call: &CallId, role: Role) -> String {
        match role {
            Role::Caller => call.0.clone(),
            Role::Media => format!("{}{}-{MEDIA}", self.prefix, call.0),
            Role::Dest => format!("{}{}-{DEST}", self.prefix, call.0),
        }
    }

    /// The playback that rings the caller during the transfer.
    pub fn ringback(&self, call: &CallId) -> String {
        format!("{}{}-ring", self.prefix, call.0)
    }

    /// The call and role of a channel id. Any id that is not one of ours is taken to be a caller:
    /// whether it really is one is decided by its StasisStart arguments, not here.
    pub fn classify_channel(&self, id: &str) -> (CallId, Role) {
        if let Some((call, suffix)) = self.split(id) {
            match suffix {
                MEDIA => return (CallId(call.to_string()), Role::Media),
                DEST => return (CallId(call.to_string()), Role::Dest),
                _ => {}
            }
        }
        (CallId(id.to_string()), Role::Caller)
    }

    /// The call a bridge id belongs to, if it is one of ours.
    pub fn classify_bridge(&self, id: &str) -> Option<CallId> {
        match self.split(id) {
            Some((call, BRIDGE)) => Some(CallId(call.to_string())),
            _ => None,
        }
    }

    fn split<'a>(&self, id: &'a str) -> Option<(&'a str, &'a str)> {
        let rest = id.strip_prefix(&self.prefix)?;
        let (call, suffix) = rest.rsplit_once('-')?;
        (!call.is_empty()).then_some((call, suffix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_derived_id_routes_back_to_its_call() {
        let ids = Ids::new("voicebot1");
        let call = CallId("1764000000.17".into());
        for role in [Role::Caller, Role::Media, Role::Dest] {
            assert_eq!(
                ids.classify_channel(&ids.channel(&call, role)),
                (call.clone(), role)
            );
        }
        assert_eq!(ids.classify_bridge(&ids.bridge(&call)), Some(call.clone()));
        assert_eq!(ids.bridge(&call), "voicebot1-1764000000.17-bridge");
        assert_eq!(
            ids.channel(&call, Role::Media),
            "voicebot1-1764000000.17-media"
        );
    }

    #[test]
    fn foreign_ids_are_callers_and_not_ours() {
        let ids = Ids::new("voicebot1");
        assert_eq!(ids.classify_channel("1764000000.3").1, Role::Caller);
        assert_eq!(ids.classify_channel("voicebot1-x-unknown").1, Role::Caller);
        assert_eq!(ids.classify_bridge("other-bridge"), None);
        assert_eq!(ids.classify_channel("voicebot1--media").1, Role::Caller);
        assert_eq!(
            ids.classify_channel("voicebot1-old-media"),
            (CallId("old".into()), Role::Media)
        );
        assert_eq!(
            Ids::new("voicebot2")
                .classify_channel("voicebot1-old-media")
                .1,
            Role::Caller
        );
    }

    #[test]
    fn call_ids_with_dashes_survive_the_round_trip() {
        let ids = Ids::new("vb");
        let call = CallId("asterisk-01-1764000000.5".into());
        assert_eq!(
            ids.classify_channel(&ids.channel(&call, Role::Dest)),
            (call.clone(), Role::Dest)
        );
        assert_eq!(ids.classify_bridge(&ids.bridge(&call)), Some(call));
    }
}
