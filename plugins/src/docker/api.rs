//! The request bodies of libnetwork's remote network driver and remote IPAM driver APIs
//! (libnetwork `docs/remote.md`, `docs/ipam.md`; the Go structs in `drivers/remote/api` and
//! `ipams/remote/api`). Field names are Go's, hence PascalCase. Go sends a nil map or slice as
//! `null` and may leave fields out, so every field defaults.

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Treats `null` like an absent field.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Option key of an IPAM address request that says what the address is for.
pub const REQUEST_ADDRESS_TYPE: &str = "RequestAddressType";
/// Its value for the network's gateway.
pub const GATEWAY_TYPE: &str = "com.docker.network.gateway";
/// IPAM option carrying the endpoint's MAC address (sent because we require it).
pub const MAC_OPTION: &str = "com.docker.network.endpoint.macaddress";
/// Network option holding the driver options (`docker network create -o K=V`).
pub const GENERIC_OPTION: &str = "com.docker.network.generic";
/// Driver option for the MTU.
pub const MTU_OPTION: &str = "com.docker.network.driver.mtu";
/// Driver or IPAM option naming the dnet network, when several share a subnet.
pub const NETWORK_OPTION: &str = "dnet.network";
/// Pool data key by which an IPAM driver hands libnetwork the gateway.
pub const POOL_GATEWAY_DATA: &str = "com.docker.network.gateway";

/// One IPv4 or IPv6 pool of a network (`IPAMData`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct IpamData {
    /// Address space the pool came from.
    #[serde(deserialize_with = "nullable")]
    pub address_space: String,
    /// The pool, CIDR.
    #[serde(deserialize_with = "nullable")]
    pub pool: String,
    /// The gateway, CIDR.
    #[serde(deserialize_with = "nullable")]
    pub gateway: String,
    /// Addresses reserved by the user.
    #[serde(deserialize_with = "nullable")]
    pub aux_addresses: BTreeMap<String, String>,
}

/// `NetworkDriver.CreateNetwork`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct CreateNetwork {
    /// Docker's id of the network.
    #[serde(rename = "NetworkID", deserialize_with = "nullable")]
    pub network_id: String,
    /// Its IPv4 pools.
    #[serde(rename = "IPv4Data", deserialize_with = "nullable")]
    pub ipv4_data: Vec<IpamData>,
    /// Its IPv6 pools.
    #[serde(rename = "IPv6Data", deserialize_with = "nullable")]
    pub ipv6_data: Vec<IpamData>,
    /// Network options; the driver options are under [`GENERIC_OPTION`].
    #[serde(rename = "Options", deserialize_with = "nullable")]
    pub options: Map<String, Value>,
}

/// `NetworkDriver.DeleteNetwork`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct NetworkRef {
    /// Docker's id of the network.
    #[serde(rename = "NetworkID", deserialize_with = "nullable")]
    pub network_id: String,
}

/// The interface part of `CreateEndpoint`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointInterface {
    /// IPv4 address, CIDR.
    #[serde(deserialize_with = "nullable")]
    pub address: String,
    /// IPv6 address, CIDR.
    #[serde(rename = "AddressIPv6", deserialize_with = "nullable")]
    pub address_ipv6: String,
    /// MAC address.
    #[serde(deserialize_with = "nullable")]
    pub mac_address: String,
}

/// `NetworkDriver.CreateEndpoint`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct CreateEndpoint {
    /// The network.
    #[serde(rename = "NetworkID", deserialize_with = "nullable")]
    pub network_id: String,
    /// Docker's id of the endpoint.
    #[serde(rename = "EndpointID", deserialize_with = "nullable")]
    pub endpoint_id: String,
    /// Its interface, as the IPAM driver and the user chose it.
    #[serde(rename = "Interface", deserialize_with = "nullable")]
    pub interface: Option<EndpointInterface>,
    /// Endpoint options.
    #[serde(rename = "Options", deserialize_with = "nullable")]
    pub options: Map<String, Value>,
}

/// `EndpointOperInfo`, `DeleteEndpoint`, `Leave`, `RevokeExternalConnectivity`, and (with
/// options) `Join` and `ProgramExternalConnectivity`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct EndpointRef {
    /// The network.
    #[serde(rename = "NetworkID", deserialize_with = "nullable")]
    pub network_id: String,
    /// The endpoint.
    #[serde(rename = "EndpointID", deserialize_with = "nullable")]
    pub endpoint_id: String,
    /// The sandbox (network namespace path), for `Join`.
    #[serde(rename = "SandboxKey", deserialize_with = "nullable")]
    pub sandbox_key: String,
    /// Options.
    #[serde(rename = "Options", deserialize_with = "nullable")]
    pub options: Map<String, Value>,
}

/// `DiscoverNew` / `DiscoverDelete`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Discovery {
    /// 1: node discovery.
    pub discovery_type: i64,
    /// Type-specific data.
    pub discovery_data: Value,
}

/// `IpamDriver.RequestPool`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RequestPool {
    /// The address space.
    #[serde(deserialize_with = "nullable")]
    pub address_space: String,
    /// The pool asked for (CIDR), or empty.
    #[serde(deserialize_with = "nullable")]
    pub pool: String,
    /// A sub-range for containers (`--ip-range`), or empty.
    #[serde(deserialize_with = "nullable")]
    pub sub_pool: String,
    /// IPAM options (`--ipam-opt`).
    #[serde(deserialize_with = "nullable")]
    pub options: BTreeMap<String, String>,
    /// An IPv6 pool.
    #[serde(rename = "V6")]
    pub v6: bool,
}

/// `IpamDriver.ReleasePool`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ReleasePool {
    /// The pool.
    #[serde(rename = "PoolID", deserialize_with = "nullable")]
    pub pool_id: String,
}

/// `IpamDriver.RequestAddress` and `IpamDriver.ReleaseAddress`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AddressRequest {
    /// The pool.
    #[serde(rename = "PoolID", deserialize_with = "nullable")]
    pub pool_id: String,
    /// The address (no prefix), or empty for any.
    #[serde(rename = "Address", deserialize_with = "nullable")]
    pub address: String,
    /// Options ([`REQUEST_ADDRESS_TYPE`], [`MAC_OPTION`]).
    #[serde(rename = "Options", deserialize_with = "nullable")]
    pub options: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nulls_and_absent_fields_default() {
        let r: CreateNetwork = serde_json::from_str(
            r#"{"NetworkID":"n1","IPv4Data":[{"AddressSpace":"dnet-local","Pool":"10.77.0.0/16","Gateway":"10.77.3.1/16","AuxAddresses":null}],"IPv6Data":null,"Options":null}"#,
        )
        .unwrap();
        assert_eq!(r.network_id, "n1");
        assert_eq!(r.ipv4_data[0].pool, "10.77.0.0/16");
        assert!(r.ipv6_data.is_empty());
        let r: CreateEndpoint = serde_json::from_str(r#"{"NetworkID":"n1"}"#).unwrap();
        assert!(r.interface.is_none());
        let r: AddressRequest =
            serde_json::from_str(r#"{"PoolID":"dnet:blue","Address":"","Options":null}"#).unwrap();
        assert!(r.options.is_empty());
    }

    #[test]
    fn wrong_types_are_errors() {
        assert!(serde_json::from_str::<CreateNetwork>(r#"{"NetworkID":7}"#).is_err());
        assert!(serde_json::from_str::<RequestPool>(r#"{"V6":"yes"}"#).is_err());
    }
}
