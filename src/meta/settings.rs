//! meta::settings: the cluster settings of [`Config`] read into what the quorum runtime needs
//! (the voter list, this node's role), and checked at start with the rest of the config.

use crate::config::Config;

use super::types::NodeId;

/// One voter of `voters = "id@host:port,…"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voter {
    pub id: NodeId,
    pub raft_addr: String,
}

/// How this node takes part in the quorum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// One of the voters; the list includes this node.
    Voter(Vec<Voter>),
    /// A learner that asks the voter at this raft address to add it.
    Learner { join: String },
}

/// Parses `id@host:port,…`: ids ≥ 0, each once, each address host:port.
pub fn parse_voters(text: &str) -> Result<Vec<Voter>, String> {
    let mut voters: Vec<Voter> = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, addr) = item
            .split_once('@')
            .ok_or_else(|| format!("{item:?}: expected id@host:port"))?;
        let id: i32 = id
            .parse()
            .map_err(|_| format!("{item:?}: the node id must be a number"))?;
        if id < 0 {
            return Err(format!("{item:?}: node ids are >= 0"));
        }
        if crate::config::split_host_port(addr).is_none() {
            return Err(format!("{item:?}: expected id@host:port"));
        }
        if voters.iter().any(|v| v.id == id as NodeId) {
            return Err(format!("node {id} is listed twice"));
        }
        voters.push(Voter {
            id: id as NodeId,
            raft_addr: addr.to_string(),
        });
    }
    if voters.is_empty() {
        return Err("no voters listed".into());
    }
    Ok(voters)
}

/// This node's role from the config. `node_id` is the effective id (node.toml may supply it).
pub fn role(config: &Config, node_id: i32) -> Result<Role, String> {
    if let Some(join) = &config.join {
        return Ok(Role::Learner { join: join.clone() });
    }
    let raft_addr = config
        .raft_listen
        .clone()
        .unwrap_or_else(|| "127.0.0.1:0".to_string());
    let voters = match &config.voters {
        Some(text) => parse_voters(text)?,
        None => vec![Voter {
            id: node_id.max(0) as NodeId,
            raft_addr,
        }],
    };
    if !voters.iter().any(|v| v.id == node_id.max(0) as NodeId) {
        return Err(format!(
            "this node ({node_id}) is not among the voters; to run it as a broker-only node, give --join instead"
        ));
    }
    Ok(Role::Voter(voters))
}

/// The raft address this node announces: `raft_advertise`, else `raft_listen`.
pub fn raft_advertised(c: &Config) -> String {
    c.raft_advertise
        .clone()
        .or_else(|| c.raft_listen.clone())
        .unwrap_or_default()
}

/// Config checks of the cluster keys: `(key, reason)` of the first bad one.
pub fn check(c: &Config) -> Result<(), (&'static str, String)> {
    if let Some(addr) = &c.raft_listen
        && addr.parse::<std::net::SocketAddr>().is_err()
    {
        return Err((
            "raft_listen",
            "must be an IP:port such as 127.0.0.1:9192".into(),
        ));
    }
    if let Some(text) = &c.voters {
        parse_voters(text).map_err(|e| ("voters", e))?;
        if c.raft_listen.is_none() {
            return Err(("raft_listen", "must be set when voters are".into()));
        }
        if c.node_id.is_none() {
            return Err(("node_id", "must be set when voters are".into()));
        }
    }
    if let Some(adv) = &c.raft_advertise
        && crate::config::split_host_port(adv).is_none()
    {
        return Err(("raft_advertise", "must be host:port".into()));
    }
    if let Some(join) = &c.join {
        if crate::config::split_host_port(join).is_none() {
            return Err(("join", "must be host:port (a voter's raft address)".into()));
        }
        if c.voters.is_some() {
            return Err((
                "join",
                "a node is either a voter (voters) or joins (join), not both".into(),
            ));
        }
        let Some(listen) = &c.raft_listen else {
            return Err(("raft_listen", "must be set when join is".into()));
        };
        let unspecified = listen
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|a| a.ip().is_unspecified());
        if unspecified && c.raft_advertise.is_none() {
            return Err((
                "raft_advertise",
                "must be set when join is and raft_listen binds every address (the others need one to reach this node at)".into(),
            ));
        }
        if c.node_id.is_none() {
            return Err(("node_id", "must be set when join is".into()));
        }
    }
    if c.raft_heartbeat_ms == 0 {
        return Err(("raft_heartbeat_ms", "must be >= 1".into()));
    }
    if c.raft_election_timeout_min_ms <= c.raft_heartbeat_ms
        || c.raft_election_timeout_max_ms <= c.raft_election_timeout_min_ms
    {
        return Err((
            "raft_election_timeout_min_ms",
            "must exceed raft_heartbeat_ms, and raft_election_timeout_max_ms must exceed it".into(),
        ));
    }
    if c.raft_rpc_timeout_ms == 0 || c.raft_snapshot_entries == 0 {
        return Err((
            "raft_rpc_timeout_ms",
            "raft_rpc_timeout_ms and raft_snapshot_entries must be >= 1".into(),
        ));
    }
    if c.broker_heartbeat_ms == 0 || c.broker_session_timeout_ms <= c.broker_heartbeat_ms {
        return Err((
            "broker_session_timeout_ms",
            "must exceed broker_heartbeat_ms (which must be >= 1)".into(),
        ));
    }
    if c.controller_request_ms_max == 0 {
        return Err(("controller_request_ms_max", "must be >= 1".into()));
    }
    if c.leader_imbalance_check_interval_ms == 0 {
        return Err(("leader_imbalance_check_interval_ms", "must be >= 1".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voters_parse_and_refuse_bad_lists() {
        let v = parse_voters("1@127.0.0.1:9192, 2@pi2.local:9192").unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[1].raft_addr, "pi2.local:9192");
        for bad in ["", "1@", "x@h:1", "1@h", "1@h:1,1@h:2", "-1@h:1"] {
            assert!(parse_voters(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_joining_node_needs_an_address_the_others_can_reach() {
        let mut c = Config {
            node_id: Some(4),
            raft_listen: Some("0.0.0.0:9192".into()),
            join: Some("pi1.local:9192".into()),
            ..Config::default()
        };
        assert_eq!(check(&c).unwrap_err().0, "raft_advertise");
        c.raft_advertise = Some("pi4.local:9192".into());
        assert!(check(&c).is_ok());
        assert_eq!(raft_advertised(&c), "pi4.local:9192");
        c.raft_advertise = None;
        c.raft_listen = Some("192.168.1.4:9192".into());
        assert!(check(&c).is_ok());
        assert_eq!(raft_advertised(&c), "192.168.1.4:9192");
    }

    #[test]
    fn a_node_missing_from_its_voters_is_refused() {
        let c = Config {
            node_id: Some(4),
            raft_listen: Some("127.0.0.1:9195".into()),
            voters: Some("1@127.0.0.1:9192".into()),
            ..Config::default()
        };
        assert!(role(&c, 4).unwrap_err().contains("--join"));
        assert!(matches!(role(&Config::default(), 1), Ok(Role::Voter(v)) if v.len() == 1));
    }
}
