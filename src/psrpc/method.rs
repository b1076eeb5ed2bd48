//! The psrpc methods a worker serves or calls, and how each is dispatched (`RegisterMethod` in
//! livekit/protocol's generated `rpc/*.psrpc.go`).

use super::channels;

/// How the servers of a method share its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MethodKind {
    /// Every server hears each request and claims it with an affinity; the client picks one.
    Affinity,
    /// Every server hears each request; the one that wins `SET NX` on it claims it (affinity 1)
    /// and the client confirms.
    Queue,
    /// Every server answers; no claims.
    Multi,
}

/// One RPC: `<service>.<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Method {
    pub service: &'static str,
    pub name: &'static str,
    pub kind: MethodKind,
}

impl Method {
    /// Whether a server claims a request before handling it and the client confirms the claim.
    pub fn requires_claim(&self) -> bool {
        self.kind != MethodKind::Multi
    }

    /// `<service>|<name>|<topic>|REQ`.
    pub fn request_channel(&self, topic: &str) -> String {
        channels::request_channel(self.service, self.name, topic)
    }

    /// `<service>|<name>|<topic>|RCLAIM`.
    pub fn claim_response_channel(&self, topic: &str) -> String {
        channels::claim_response_channel(self.service, self.name, topic)
    }
}

pub const EGRESS_INTERNAL: &str = "EgressInternal";
pub const EGRESS_HANDLER: &str = "EgressHandler";
pub const IO_INFO: &str = "IOInfo";

/// `rpc.StartEgressRequest` -> `livekit.EgressInfo`; topic: the cluster id, `""` from
/// livekit-server.
pub const START_EGRESS: Method = Method {
    service: EGRESS_INTERNAL,
    name: "StartEgress",
    kind: MethodKind::Affinity,
};

/// `rpc.ListActiveEgressRequest` -> `rpc.ListActiveEgressResponse`; topic `""`.
pub const LIST_ACTIVE_EGRESS: Method = Method {
    service: EGRESS_INTERNAL,
    name: "ListActiveEgress",
    kind: MethodKind::Multi,
};

/// `livekit.StopEgressRequest` -> `livekit.EgressInfo`; topic: the egress id.
pub const STOP_EGRESS: Method = Method {
    service: EGRESS_HANDLER,
    name: "StopEgress",
    kind: MethodKind::Queue,
};

/// `livekit.UpdateStreamRequest` -> `livekit.EgressInfo`; topic: the egress id.
pub const UPDATE_STREAM: Method = Method {
    service: EGRESS_HANDLER,
    name: "UpdateStream",
    kind: MethodKind::Queue,
};

/// `livekit.EgressInfo` -> `google.protobuf.Empty` (livekit-server v1.5.1+); no topic.
pub const CREATE_EGRESS: Method = Method {
    service: IO_INFO,
    name: "CreateEgress",
    kind: MethodKind::Queue,
};

/// `livekit.EgressInfo` -> `google.protobuf.Empty` (livekit-server v1.5.1+); no topic.
pub const UPDATE_EGRESS: Method = Method {
    service: IO_INFO,
    name: "UpdateEgress",
    kind: MethodKind::Queue,
};

/// `livekit.EgressInfo` -> `google.protobuf.Empty` (livekit-server v1.4.2 - v1.5.0 only); no topic.
pub const UPDATE_EGRESS_INFO: Method = Method {
    service: IO_INFO,
    name: "UpdateEgressInfo",
    kind: MethodKind::Queue,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn egress_methods_listen_where_livekit_server_publishes() {
        assert_eq!(
            START_EGRESS.request_channel(""),
            "EgressInternal|StartEgress|REQ"
        );
        assert_eq!(
            START_EGRESS.claim_response_channel(""),
            "EgressInternal|StartEgress|RCLAIM"
        );
        assert_eq!(
            LIST_ACTIVE_EGRESS.request_channel(""),
            "EgressInternal|ListActiveEgress|REQ"
        );
        assert_eq!(
            STOP_EGRESS.request_channel("EG_abc123"),
            "EgressHandler|StopEgress|EG_abc123|REQ"
        );
        assert_eq!(
            UPDATE_STREAM.claim_response_channel("EG_abc123"),
            "EgressHandler|UpdateStream|EG_abc123|RCLAIM"
        );
        assert_eq!(CREATE_EGRESS.request_channel(""), "IOInfo|CreateEgress|REQ");
        assert_eq!(
            UPDATE_EGRESS_INFO.request_channel(""),
            "IOInfo|UpdateEgressInfo|REQ"
        );
        assert!(!LIST_ACTIVE_EGRESS.requires_claim());
        assert!(START_EGRESS.requires_claim() && STOP_EGRESS.requires_claim());
    }
}
