#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Limits of the process, for every executable of the package (this is the lowest target they
/// all link): the worker's connections and vipps-sim's each take a file descriptor.
public enum ProcessLimits {
    /// Raises the soft limit on open file descriptors to `needed` if it is lower, as far as the
    /// hard limit allows. Returns the soft limit now in force; nil if it could not be read.
    public static func raiseOpenFiles(toAtLeast needed: Int) -> Int? {
        #if canImport(Glibc)
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return nil }
        let wanted = rlim_t(max(needed, 0))
        if limit.rlim_cur < wanted {
            var raised = limit
            raised.rlim_cur = min(wanted, limit.rlim_max)
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
        }
        return Int(clamping: limit.rlim_cur)  // RLIM_INFINITY (all ones) clamps to Int.max
        #else
        return nil
        #endif
    }
}
