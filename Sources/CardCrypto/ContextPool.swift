import CCardCryptoShim
import Synchronization

/// OpenSSL contexts prepared once and reused: a caller takes one, uses it alone, and puts it back.
/// The lock guards only the pop and the push (nanoseconds), never the RSA operation; contexts are
/// made up front for the expected concurrency and more only if more callers arrive at once.
final class ContextPool: Sendable {
    // An OpaquePointer is not Sendable; a context is only ever used by the one caller that took it.
    struct Context: @unchecked Sendable { let pointer: OpaquePointer }

    private let available: Mutex<[Context]>
    private let make: @Sendable () -> OpaquePointer?
    private let release: @Sendable (OpaquePointer) -> Void

    init?(prepare count: Int, make: @escaping @Sendable () -> OpaquePointer?, release: @escaping @Sendable (OpaquePointer) -> Void) {
        var contexts: [Context] = []
        contexts.reserveCapacity(max(count, 8))
        for _ in 0..<max(count, 1) {
            guard let pointer = make() else {
                contexts.forEach { release($0.pointer) }
                return nil
            }
            contexts.append(Context(pointer: pointer))
        }
        self.available = Mutex(contexts)
        self.make = make
        self.release = release
    }

    @inline(__always)
    func withContext<R: ~Copyable>(_ body: (OpaquePointer) -> R) -> R? {
        let taken = available.withLock { $0.popLast() }
        guard let context = taken ?? make().map(Context.init(pointer:)) else { return nil }
        defer { available.withLock { $0.append(context) } }
        return body(context.pointer)
    }

    deinit {
        available.withLock { contexts in contexts.forEach { release($0.pointer) } }
    }
}
