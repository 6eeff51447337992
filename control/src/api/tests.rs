//! Codec round trips and malformed-input handling.

use super::*;
use crate::config::{ApplianceConfig, DhGroup, EncryptionAlgorithm};
use crate::download::Device;

fn example() -> ApplianceConfig {
    ApplianceConfig::from_toml_str(include_str!("../../examples/appliance.toml")).unwrap()
}

fn round_trip(req: Request) {
    let env = envelope(42, req);
    let line = encode_request(&env).unwrap();
    assert_eq!(line.last(), Some(&b'\n'));
    assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
    let back = decode_request(&line[..line.len() - 1]).unwrap();
    assert_eq!(back, env);
}

#[test]
fn every_request_round_trips() {
    let cfg = example();
    let reqs = vec![
        Request::Ping {},
        Request::CreateCustomerGateway {
            customer_gateway: cfg.customer_gateways[0].clone(),
        },
        Request::ModifyCustomerGateway {
            id: "cgw-1".into(),
            changes: CustomerGatewayPatch {
                bgp_asn: Some(65010),
                ..CustomerGatewayPatch::default()
            },
        },
        Request::DeleteCustomerGateway { id: "cgw-1".into() },
        Request::ShowCustomerGateways { id: None },
        Request::CreateConnection {
            connection: Box::new(cfg.connections[0].clone()),
        },
        Request::ModifyConnectionOptions {
            connection_id: "vpn-1".into(),
            options: VpnConnectionOptionsPatch {
                local_ipv4_network_cidr: Some("10.0.0.0/8".parse().unwrap()),
                ..VpnConnectionOptionsPatch::default()
            },
        },
        Request::ModifyTunnelOptions {
            connection_id: "vpn-1".into(),
            tunnel: 1,
            options: Box::new(TunnelOptionsPatch {
                phase1_encryption_algorithms: Some(vec![EncryptionAlgorithm::Aes128Gcm16]),
                phase2_dh_groups: Some(vec![DhGroup::Modp2048]),
                phase2_lifetime_secs: Some(1800),
                ..TunnelOptionsPatch::default()
            }),
        },
        Request::DeleteConnection { id: "vpn-1".into() },
        Request::ShowConnections {
            id: Some("vpn-1".into()),
        },
        Request::AddStaticRoute {
            connection_id: "vpn-1".into(),
            prefix: "10.9.0.0/16".parse().unwrap(),
        },
        Request::DeleteStaticRoute {
            connection_id: "vpn-1".into(),
            prefix: "2001:db8::/32".parse().unwrap(),
        },
        Request::ShowTunnels {
            connection_id: None,
        },
        Request::ShowSas {
            connection_id: Some("vpn-1".into()),
        },
        Request::ShowTunnel {
            connection_id: "vpn-1".into(),
            outside_ip_address: "198.51.100.10".parse().unwrap(),
        },
        Request::ShowHealthEvents {
            connection_id: None,
        },
        Request::ShowRoutes {
            connection_id: None,
        },
        Request::ShowStats {},
        Request::Logs {
            connection_id: None,
            lines: Some(5),
        },
        Request::ConfigDownload {
            connection_id: "vpn-1".into(),
            device: Device::Strongswan,
        },
    ];
    for r in reqs {
        round_trip(r);
    }
}

#[test]
fn replies_round_trip() {
    let cfg = example();
    let results = vec![
        Ok(Response::Ok),
        Ok(Response::Connection {
            connection: Box::new(ConnectionView::redacted(&cfg.connections[0])),
        }),
        Ok(Response::Tunnels {
            tunnels: vec![TunnelStatus {
                connection_id: "vpn-1".into(),
                tunnel: 0,
                outside_ip_address: Some("198.51.100.10".parse().unwrap()),
                peer_ip_address: None,
                inside_cidr: Some("169.254.21.0/30".parse().unwrap()),
                status: TunnelUpDown::Down,
                ike_phase1_state: IkePhaseState::Negotiating,
                ike_phase2_state: IkePhaseState::Down,
                bgp_state: None,
                nat_t_detected: false,
                last_status_change_ms: None,
                last_status_change_reason: None,
                status_changes: 0,
                flaps: 0,
                negotiated: None,
                phase1_rekey_in_secs: None,
                phase2_rekey_in_secs: None,
                ike_version: Some(IkeVersion::Ikev1),
                ike_refused: None,
                status_detail: Some(
                    "CHILD_SA not established: TS_UNACCEPTABLE refused by the peer, 1 failure"
                        .to_owned(),
                ),
                next_retry_ms: Some(1_800_000_010_000),
            }],
        }),
        Err(ApiError::validation(
            &cfg.modify_tunnel_options(
                "vpn-branch1",
                0,
                TunnelOptionsPatch {
                    phase2_lifetime_secs: Some(5000),
                    ..TunnelOptionsPatch::default()
                },
            )
            .unwrap_err(),
        )),
    ];
    for r in results {
        let line = encode_reply(Some(9), r.clone());
        let back = decode_response(&line[..line.len() - 1]).unwrap();
        assert_eq!(back.id, Some(9));
        assert_eq!(back.into_result(), r);
    }
}

#[test]
fn redacted_view_hides_keys() {
    let cfg = example();
    let v = ConnectionView::redacted(&cfg.connections[0]);
    let json = serde_json::to_string(&v).unwrap();
    assert!(!json.contains("Example.key"), "{json}");
    assert!(json.contains("\"pre_shared_key_set\":[true,true]"));
}

#[test]
fn the_documented_example_decodes() {
    let line = br#"{"version":1,"id":7,"request":{"type":"modify_tunnel_options","connection_id":"vpn-branch1","tunnel":0,"options":{"phase2_lifetime_secs":5000}}}"#;
    let env = decode_request(line).unwrap();
    assert_eq!(env.id, 7);
    assert!(env.request.is_change());
}

#[test]
fn malformed_input_gives_typed_errors_with_the_id_when_readable() {
    let cases: &[(&[u8], ErrorCode, Option<u64>)] = &[
        (b"garbage", ErrorCode::BadRequest, None),
        (b"\xff\xfe", ErrorCode::BadRequest, None),
        (b"[1,2]", ErrorCode::BadRequest, None),
        (b"{\"version\":1,\"id\":3,", ErrorCode::BadRequest, None),
        (
            b"{\"version\":2,\"id\":3,\"request\":{\"type\":\"ping\"}}",
            ErrorCode::UnsupportedVersion,
            Some(3),
        ),
        (
            b"{\"version\":1,\"id\":4,\"request\":{\"type\":\"reboot\"}}",
            ErrorCode::BadRequest,
            Some(4),
        ),
        (
            b"{\"version\":1,\"id\":5,\"request\":{\"type\":\"show_stats\",\"x\":1}}",
            ErrorCode::BadRequest,
            Some(5),
        ),
        (
            b"{\"version\":1,\"request\":{\"type\":\"ping\"}}",
            ErrorCode::BadRequest,
            None,
        ),
    ];
    for (input, code, id) in cases {
        let e = decode_request(input).unwrap_err();
        assert_eq!(e.error.code, *code, "{:?}", String::from_utf8_lossy(input));
        assert_eq!(e.id, *id, "{:?}", String::from_utf8_lossy(input));
        assert!(!e.error.message.is_empty());
    }
    let huge = vec![b' '; MAX_MESSAGE_BYTES + 1];
    assert_eq!(
        decode_request(&huge).unwrap_err().error.code,
        ErrorCode::TooLarge
    );
}

/// Issue 17: an envelope field of the wrong type or range is named as
/// such, not reported as missing.
#[test]
fn envelope_fields_of_the_wrong_kind_say_what_was_sent() {
    let cases: &[(&str, Option<u64>, &[&str])] = &[
        (
            r#"{"version":1,"id":-1}"#,
            None,
            &["\"id\"", "negative number: -1"],
        ),
        (
            r#"{"version":1,"id":18446744073709551616}"#,
            None,
            &["\"id\"", "not an integer below 2^64"],
        ),
        (
            r#"{"version":1,"id":"7"}"#,
            None,
            &["\"id\"", "a string: \"7\""],
        ),
        (
            r#"{"version":"1","id":7}"#,
            Some(7),
            &["\"version\"", "a string: \"1\""],
        ),
        (
            r#"{"version":1.5,"id":7}"#,
            Some(7),
            &["\"version\"", "not an integer"],
        ),
        (
            r#"{"version":null,"id":7}"#,
            Some(7),
            &["\"version\"", "null"],
        ),
    ];
    for (input, id, needles) in cases {
        let e = decode_request(input.as_bytes()).unwrap_err();
        assert_eq!(e.error.code, ErrorCode::BadRequest, "{input}");
        assert_eq!(e.id, *id, "{input}");
        let m = &e.error.message;
        assert!(!m.contains("missing"), "{input}: {m}");
        for n in *needles {
            assert!(m.contains(n), "{input}: {m:?} lacks {n:?}");
        }
    }
    // What is echoed is bounded.
    let long = format!(r#"{{"version":1,"id":"{}"}}"#, "9".repeat(50_000));
    let m = decode_request(long.as_bytes()).unwrap_err().error.message;
    assert!(m.len() < 300, "{} bytes", m.len());
}

/// A request's error echoes a bounded part of what was sent, whatever
/// field carries the long value (the `api_request` fuzz target asserts the
/// same bound on every input).
#[test]
fn errors_echo_a_bounded_part_of_long_values() {
    let long = "x".repeat(100_000);
    for line in [
        format!(r#"{{"version":1,"id":1,"request":{{"type":"{long}"}}}}"#),
        format!(r#"{{"version":1,"id":1,"request":{{"type":"show_tunnels","{long}":1}}}}"#),
        format!(
            r#"{{"version":1,"id":1,"request":{{"type":"show_tunnels","connection_id":7}},"{long}":1}}"#
        ),
        format!(r#"{{"version":1,"id":"{long}"}}"#),
        format!(r#"{{"version":1,"id":1,"request":"{long}"}}"#),
    ] {
        let e = decode_request(line.as_bytes()).expect_err("invalid");
        assert!(
            e.error.message.chars().count() <= MAX_ERROR_CHARS,
            "{} bytes: {}…",
            e.error.message.len(),
            &e.error.message[..200]
        );
    }
}
