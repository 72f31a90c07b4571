import CCardCryptoShim

/// A heap buffer for secrets (plaintext card data, passphrases, PEM text) that is wiped with
/// `OPENSSL_cleanse` before it is freed. Noncopyable, so there is exactly one owner to wipe it.
public struct SecureBytes: ~Copyable, @unchecked Sendable {
    // @unchecked: the pointer is owned uniquely (noncopyable) and only touched through borrows.
    private let base: UnsafeMutableRawPointer
    public let capacity: Int
    public private(set) var count: Int

    public init(capacity: Int) {
        precondition(capacity >= 0)
        self.capacity = capacity
        self.base = UnsafeMutableRawPointer.allocate(byteCount: max(capacity, 1), alignment: 16)
        self.count = 0
    }

    /// Copies `bytes` in; the caller remains responsible for wiping its own copy.
    public init(copying bytes: UnsafeRawBufferPointer) {
        self.init(capacity: bytes.count)
        if let source = bytes.baseAddress, bytes.count > 0 {
            base.copyMemory(from: source, byteCount: bytes.count)
        }
        count = bytes.count
    }

    public init(copying bytes: [UInt8]) {
        self.init(capacity: bytes.count)
        withUnsafeMutableCapacity { destination in
            bytes.withUnsafeBytes { destination.copyMemory(from: $0) }
            return bytes.count
        }
    }

    public func withUnsafeBytes<R: ~Copyable, E: Error>(
        _ body: (UnsafeRawBufferPointer) throws(E) -> R
    ) throws(E) -> R {
        try body(UnsafeRawBufferPointer(start: base, count: count))
    }

    /// Lets `body` fill the buffer and say how many bytes it wrote.
    public mutating func withUnsafeMutableCapacity<E: Error>(
        _ body: (UnsafeMutableRawBufferPointer) throws(E) -> Int
    ) throws(E) {
        let written = try body(UnsafeMutableRawBufferPointer(start: base, count: capacity))
        precondition(written >= 0 && written <= capacity)
        count = written
    }

    deinit {
        ccs_cleanse(base, capacity)
        base.deallocate()
    }
}

/// Wipes memory that held a secret. The compiler may drop a plain `memset` before a free; this it
/// cannot.
@inline(__always)
public func wipe(_ buffer: UnsafeMutableRawBufferPointer) {
    if let base = buffer.baseAddress { ccs_cleanse(base, buffer.count) }
}

/// Wipes memory lent out read-only (a NIO `ByteBuffer`'s storage, via `withVeryUnsafeBytes`) in
/// place, with no copy on write: for a buffer that carried card data and that nothing reads any more.
@inline(__always)
public func wipeInPlace(_ buffer: UnsafeRawBufferPointer) {
    wipe(UnsafeMutableRawBufferPointer(mutating: buffer))
}
