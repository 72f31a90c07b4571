import Foundation
import NIOCore
import NIOPosix
import Processing
import Synchronization

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

    /// Resumes the calling task once the loop has next read its sockets (`IOTurn`). Called on the
    /// loop (the task runs here); anywhere else, or before the loop's pipe is open, a plain yield.
    func yieldToIO() async {
        guard eventLoop.inEventLoop else { return await Task.yield() }
        await IOTurn.of(eventLoop).take()
    }

    /// One executor per loop of `group`, in the group's order.
    static func forEachLoop(of group: any EventLoopGroup) -> [EventLoopTaskExecutor] {
        group.makeIterator().map { EventLoopTaskExecutor($0) }
    }
}

/// A turn of an event loop through its sockets, for a task that has kept the loop busy. NIO runs
/// every task queued during a tick in that same tick, and goes back to its selector only when none
/// is left, so a task that re-queues itself (a yield) never lets it. A byte written to a pipe whose
/// reading end the loop watches is seen only when the loop next reads its sockets: the tasks
/// waiting here resume then, after every socket that was ready has been served. One write, one
/// read and no timer per turn; nothing is idle.
final class IOTurn: @unchecked Sendable {
    // @unchecked: everything here is touched on `eventLoop` only.
    private let eventLoop: any EventLoop

    /// One per loop for the process (each application built makes executors of its own; one pipe
    /// per loop is enough), made again if the loop's was closed (its group shut down).
    private static let turns = Mutex<[ObjectIdentifier: IOTurn]>([:])

    static func of(_ eventLoop: any EventLoop) -> IOTurn {
        turns.withLock { turns in
            let key = ObjectIdentifier(eventLoop as AnyObject)
            if let turn = turns[key], !turn.isClosed { return turn }
            let turn = IOTurn(eventLoop)
            turns[key] = turn
            return turn
        }
    }

    /// Read from any thread under `turns`' lock: a stale answer only makes one more turn, or one
    /// plain yield, before the next look.
    private let closedFlag = Atomic<Bool>(false)
    private var isClosed: Bool { closedFlag.load(ordering: .relaxed) }
    private enum State { case unopened, opening, open(writeFD: Int32), closed }
    private var state = State.unopened
    private var waiters: [UnsafeContinuation<Void, Never>] = []

    init(_ eventLoop: any EventLoop) { self.eventLoop = eventLoop }

    /// Called on the loop.
    func take() async {
        guard case .open(let writeFD) = state else {
            if case .unopened = state { open() }
            return await Task.yield()  // until the pipe is open, or for good if it cannot be
        }
        if waiters.isEmpty {
            var byte: UInt8 = 1
            // Non-blocking: a full pipe (never, one byte at a time) already holds a byte to read.
            if write(writeFD, &byte, 1) < 0 && errno != EAGAIN {
                closed()  // a pipe that cannot be written: plain yields from now on
                return await Task.yield()
            }
        }
        await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in waiters.append(continuation) }
    }

    private func open() {
        state = .opening
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { closed(); return }
        let (readFD, writeFD) = (fds[0], fds[1])
        // (pipe2 is not in Swift's Glibc module: set one by one. The process spawns no children
        // between the two, except a test's; an inherited pipe end does nothing there.)
        _ = fcntl(writeFD, F_SETFL, fcntl(writeFD, F_GETFL) | O_NONBLOCK)
        _ = fcntl(writeFD, F_SETFD, FD_CLOEXEC)
        _ = fcntl(readFD, F_SETFD, FD_CLOEXEC)
        let bound = NIOLoopBound(self, eventLoop: eventLoop)
        NIOPipeBootstrap(group: eventLoop)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Reader(turn: bound)) }
            }
            .takingOwnershipOfDescriptor(input: readFD)
            .whenComplete { result in
                switch result {
                case .success: bound.value.state = .open(writeFD: writeFD)
                case .failure:
                    // The reading end is NIO's to close once it made a channel of it (the likely
                    // failure: the loop shutting down); at worst it leaks, never closed twice.
                    close(writeFD)
                    bound.value.closed()
                }
            }
    }

    fileprivate func resumeAll() {
        let resumed = waiters
        waiters.removeAll()
        resumed.forEach { $0.resume() }
    }

    fileprivate func closed() {
        if case .open(let writeFD) = state { close(writeFD) }
        state = .closed
        closedFlag.store(true, ordering: .relaxed)
        resumeAll()
    }

    /// The pipe's reading end: any byte means the loop is reading its sockets now.
    private final class Reader: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        let turn: NIOLoopBound<IOTurn>
        init(turn: NIOLoopBound<IOTurn>) { self.turn = turn }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) { turn.value.resumeAll() }
        func channelInactive(context: ChannelHandlerContext) {
            turn.value.closed()
            context.fireChannelInactive()
        }
    }
}
