import CCardCryptoShim

/// What a process that holds private keys and clear card numbers does to itself at start.
public enum ProcessHardening {
    /// Turns core dumps off: a dump of this process would hold the private key, its copies in the
    /// decryption contexts, and every card number in flight, and land on disk where a crash
    /// handler (systemd-coredump, apport) keeps it. Also keeps other processes of the same user
    /// from attaching to it or reading its memory. False if the system refused.
    public static func disableCoreDumps() -> Bool { ccs_disable_core_dumps() == 1 }
}
