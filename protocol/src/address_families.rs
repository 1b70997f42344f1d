//! Socket address families by the names `RestrictAddressFamilies=` uses, in the kernel's
//! order: berthd reads unit files with them, berth-helper compiles them into the filter.

/// Every family Linux has, from `AF_UNIX` (1) on: a family's number is its place here plus one.
/// `AF_LOCAL` is `AF_UNIX`'s other name and not listed.
pub const ADDRESS_FAMILIES: &[&str] = &[
    "AF_UNIX",
    "AF_INET",
    "AF_AX25",
    "AF_IPX",
    "AF_APPLETALK",
    "AF_NETROM",
    "AF_BRIDGE",
    "AF_ATMPVC",
    "AF_X25",
    "AF_INET6",
    "AF_ROSE",
    "AF_DECnet",
    "AF_NETBEUI",
    "AF_SECURITY",
    "AF_KEY",
    "AF_NETLINK",
    "AF_PACKET",
    "AF_ASH",
    "AF_ECONET",
    "AF_ATMSVC",
    "AF_RDS",
    "AF_SNA",
    "AF_IRDA",
    "AF_PPPOX",
    "AF_WANPIPE",
    "AF_LLC",
    "AF_IB",
    "AF_MPLS",
    "AF_CAN",
    "AF_TIPC",
    "AF_BLUETOOTH",
    "AF_IUCV",
    "AF_RXRPC",
    "AF_ISDN",
    "AF_PHONET",
    "AF_IEEE802154",
    "AF_CAIF",
    "AF_ALG",
    "AF_NFC",
    "AF_VSOCK",
    "AF_KCM",
    "AF_QIPCRTR",
    "AF_SMC",
    "AF_XDP",
    "AF_MCTP",
];

/// The number of family `name`, `AF_LOCAL` and `AF_UNSPEC` (0) included.
pub fn number(name: &str) -> Option<u32> {
    match name {
        "AF_UNSPEC" => Some(0),
        "AF_LOCAL" => Some(1),
        _ => ADDRESS_FAMILIES
            .iter()
            .position(|known| *known == name)
            .and_then(|i| u32::try_from(i + 1).ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_follow_the_kernel() {
        assert_eq!(number("AF_UNIX"), Some(1));
        assert_eq!(number("AF_INET6"), Some(10));
        assert_eq!(number("AF_NETLINK"), Some(16));
        assert_eq!(number("AF_PACKET"), Some(17));
        assert_eq!(number("AF_VSOCK"), Some(40));
        assert_eq!(number("AF_MCTP"), Some(45));
    }

    #[test]
    fn an_unknown_family_has_no_number() {
        assert_eq!(number("AF_BERTH"), None);
    }
}
