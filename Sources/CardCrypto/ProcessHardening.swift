import CCardCryptoShim

/// What a process that holds private keys and clear card numbers does to itself at start.
public enum ProcessHardening {
    /// Turns core dumps off: a dump of this process would hold the private key, its copies in the
    /// decryption contexts, and every card number in flight, and land on disk where a crash
    /// handler (systemd-coredump, apport) keeps it. Also keeps other processes of the same user
    /// from attaching to it or reading its memory. False if the system refused.
    public static func disableCoreDumps() -> Bool { ccs_disable_core_dumps() == 1 }

    /// Whether every buffer OpenSSL frees is wiped first: its PEM decoder frees the clear private
    /// key it decoded (and an encrypted key's decrypted copy) unwiped. Installed before `main` on
    /// Linux by the shim; false elsewhere, or if something made OpenSSL allocate before it.
    public static var openSSLFreesAreWiped: Bool { ccs_openssl_frees_are_wiped() == 1 }
}
