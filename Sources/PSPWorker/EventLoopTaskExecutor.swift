import NIOCore
import Processing

/// Runs a task's jobs on one SwiftNIO event loop, so that the makePayment workers and the HTTP
/// front share the event loop threads instead of also waking the cooperative pool's: on a machine
/// whose every core is busy with RSA, each extra busy thread costs task switches (and, under a
/// hypervisor, cross-vCPU wake-ups) on every hand-off.
///
/// A job from another thread costs one `execute` (a lock and, when the loop sleeps, an eventfd
/// write); a job enqueued from the loop itself costs no wake-up at all.
final class EventLoopTaskExecutor: ThreadBoundTaskExecutor {
    let eventLoop: any EventLoop

    init(_ eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    var isCurrentThread: Bool { eventLoop.inEventLoop }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        eventLoop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }

    /// One executor per loop of `group`, in the group's order.
    static func forEachLoop(of group: any EventLoopGroup) -> [EventLoopTaskExecutor] {
        group.makeIterator().map { EventLoopTaskExecutor($0) }
    }
}
