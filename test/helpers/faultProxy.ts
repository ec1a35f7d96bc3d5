// A TCP proxy between MQTT clients and a broker that lets a test drop, stall or refuse connections.
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';

const HOST = '127.0.0.1';

/** The network faults [[FaultProxy.inject]] makes. */
export type NetworkFault = 'cut' | 'refuse' | 'stall';

/** What one side of a connection sends to the other: bytes, its end (FIN) or a reset (RST). */
type Item = Buffer | 'end' | 'reset';

function ignore(): void {
    // Socket errors (ECONNRESET, ECONNREFUSED, EPIPE) are the faults this proxy exists to make.
}

/**
 * Sends an RST and destroys the socket. A socket still connecting has nothing to reset: it is
 * simply destroyed (resetAndDestroy would wait for the connection to complete first).
 */
function reset(socket: Socket): void {
    if (socket.destroyed) {
        return;
    }
    if (socket.connecting) {
        socket.destroy();
    } else {
        socket.resetAndDestroy();
    }
}

/** One direction of a proxied connection: passes items on to `to`, or holds them while stalled. */
class Direction {
    private readonly held: Item[] = [];

    public constructor(
        private readonly to: Socket,
        private readonly stalled: () => boolean,
    ) {}

    public push(item: Item): void {
        if (this.stalled()) {
            this.held.push(item);
        } else {
            this.deliver(item);
        }
    }

    /** Delivers what was held, in order. */
    public flush(): void {
        for (const item of this.held.splice(0)) {
            this.deliver(item);
        }
    }

    private deliver(item: Item): void {
        if (this.to.destroyed) {
            return;
        }
        if (item === 'end') {
            this.to.end();
        } else if (item === 'reset') {
            reset(this.to);
        } else {
            // No backpressure: test traffic is small, and Node buffers what the socket cannot take yet.
            this.to.write(item);
        }
    }
}

/** A client socket, the backend socket opened for it, and the two directions between them. */
class ProxiedConnection {
    public readonly toBackend: Direction;
    public readonly toClient: Direction;

    public constructor(
        public readonly client: Socket,
        public readonly backend: Socket,
        stalled: () => boolean,
    ) {
        this.toBackend = new Direction(backend, stalled);
        this.toClient = new Direction(client, stalled);
        ProxiedConnection.wire(client, this.toBackend);
        ProxiedConnection.wire(backend, this.toClient);
    }

    /** Whether either socket is still open. */
    public get open(): boolean {
        return !this.client.destroyed || !this.backend.destroyed;
    }

    public cut(): void {
        reset(this.client);
        reset(this.backend);
    }

    public flush(): void {
        this.toBackend.flush();
        this.toClient.flush();
    }

    private static wire(from: Socket, toOther: Direction): void {
        from.on('error', ignore);
        from.on('data', (chunk: Buffer) => toOther.push(chunk));
        from.on('end', () => toOther.push('end'));
        // A socket that failed (reset by its peer, refused) resets the other side too. One closed
        // without an error has either ended (already passed on) or was destroyed here.
        from.on('close', (hadError: boolean) => {
            if (hadError) {
                toOther.push('reset');
            }
        });
    }
}

/**
 * A TCP proxy on 127.0.0.1 (free port) between MQTT clients and a broker, for injecting network
 * faults in tests. Every client connection gets its own backend connection to the current
 * target; bytes, ends (FIN) and resets (RST) are passed on in both directions.
 *
 * - `cutAll()` resets (RST) every client and backend socket, like a network drop. New
 *   connections are accepted afterwards.
 * - `stall()` makes every connection, existing or new, a black hole: the proxy keeps reading
 *   both sockets (so the peers' writes succeed) but holds what it reads, data as well as ends
 *   and resets, instead of passing it on. Nothing is dropped: `unstall()` delivers what was
 *   held, in order, and forwarding resumes. A client sees a silent, half-dead connection and
 *   can only notice it with its keepalive; the broker likewise, and a close on either side
 *   reaches the other only after `unstall()`, as when the real network comes back.
 * - `refuse(ms?)` accepts new TCP connections and destroys them at once (the client sees its
 *   socket closed) for `ms` milliseconds, or until `accept()` when `ms` is omitted. It does not
 *   touch existing connections.
 * - `attempts()` lists the `performance.now()` timestamps (monotonic milliseconds; compare
 *   differences only) of every incoming client connection, refused or not.
 * - If the target is unreachable, the client connection is reset at once (unless stalled).
 *
 * The proxy adds no Nagle delay (its sockets are noDelay); the clients' and the broker's own
 * sockets may still have it: MQTT.js and Aedes leave it on.
 *
 * Socket errors never escape: every socket has an error listener.
 *
 * ### Example ###
 *
 *     const proxy = await FaultProxy.start(broker.host, broker.port);
 *     const client = await mqtt.connectAsync(proxy.url, { keepalive: 1 });
 *     proxy.stall();        // the client's keepalive must notice
 *     ...
 *     await proxy.stop();
 */
export class FaultProxy {
    private readonly _server: Server;
    private readonly _targetHost: string;
    private _targetPort: number;
    private readonly _connections = new Set<ProxiedConnection>();
    private readonly _attempts: number[] = [];
    private _accepted = 0;
    private _stalled = false;
    private _refusing = false;
    private _refuseTimer?: NodeJS.Timeout;
    private _stopping?: Promise<void>;

    private constructor(server: Server, targetHost: string, targetPort: number) {
        this._server = server;
        this._targetHost = targetHost;
        this._targetPort = targetPort;
        server.on('connection', (socket: Socket) => this.onConnection(socket));
        server.on('error', ignore);
    }

    /** Starts a proxy to `targetHost:targetPort`; resolves once it listens. */
    public static async start(targetHost: string, targetPort: number): Promise<FaultProxy> {
        // allowHalfOpen: an end from one side is passed on (or held) here, not answered by Node.
        // noDelay: no Nagle delay added to what is passed on.
        const server = createServer({ allowHalfOpen: true, noDelay: true });
        await new Promise<void>((resolve, reject) => {
            server.once('error', reject);
            server.listen(0, HOST, () => {
                server.off('error', reject);
                resolve();
            });
        });
        return new FaultProxy(server, targetHost, targetPort);
    }

    /** The port the proxy listens on. */
    public get port(): number {
        return (this._server.address() as AddressInfo).port;
    }

    /** `mqtt://127.0.0.1:<port>` */
    public get url(): string {
        return `mqtt://${HOST}:${this.port}`;
    }

    /** The backend port new connections go to. */
    public get targetPort(): number {
        return this._targetPort;
    }

    /** Sends new connections to `port` on the same host; existing ones stay where they are. */
    public retarget(port: number): void {
        this._targetPort = port;
    }

    /** Resets every current client and backend socket. */
    public cutAll(): void {
        for (const connection of this._connections) {
            connection.cut();
        }
    }

    /** Holds everything on every connection, existing or new, until `unstall()`. */
    public stall(): void {
        this._stalled = true;
    }

    /** Delivers what was held and resumes forwarding. */
    public unstall(): void {
        this._stalled = false;
        for (const connection of this._connections) {
            connection.flush();
        }
    }

    /** Refuses new connections for `ms` milliseconds, or until `accept()` when omitted. */
    public refuse(ms?: number): void {
        clearTimeout(this._refuseTimer);
        this._refuseTimer = undefined;
        this._refusing = true;
        if (ms !== undefined) {
            this._refuseTimer = setTimeout(() => this.accept(), ms);
            this._refuseTimer.unref();
        }
    }

    /** Ends a `refuse()` window early. */
    public accept(): void {
        clearTimeout(this._refuseTimer);
        this._refuseTimer = undefined;
        this._refusing = false;
    }

    /**
     * Injects one network fault: `cut` resets every connection; `refuse` refuses new connections
     * for `refuseMs` and resets the current ones; `stall` holds all traffic until `noticed()` is
     * true (a keepalive saw the dead link) or `timeoutMs` has passed, then lets it through.
     *
     * @returns false when a stall was not noticed in time, otherwise true.
     */
    public async inject(fault: NetworkFault, options: { refuseMs: number; noticed: () => boolean; timeoutMs: number }): Promise<boolean> {
        if (fault === 'cut') {
            this.cutAll();
            return true;
        }
        if (fault === 'refuse') {
            this.refuse(options.refuseMs);
            this.cutAll();
            return true;
        }
        this.stall();
        const deadline = performance.now() + options.timeoutMs;
        while (!options.noticed() && performance.now() < deadline) {
            await new Promise((resolve) => setTimeout(resolve, 10));
        }
        const noticed = options.noticed();
        this.unstall();
        return noticed;
    }

    /** `performance.now()` of every incoming client connection (refused or not), oldest first. */
    public attempts(): number[] {
        return [...this._attempts];
    }

    /** Client connections accepted and forwarded since start (refused ones not included). */
    public connectionCount(): number {
        return this._accepted;
    }

    /** Forwarded connections with a socket still open on either side. */
    public openConnections(): number {
        let open = 0;
        for (const connection of this._connections) {
            if (connection.open) {
                open++;
            }
        }
        return open;
    }

    /**
     * Stops listening and resets every socket; resolves once the port is released.
     * Idempotent: later calls return the same promise.
     */
    public stop(): Promise<void> {
        this._stopping ??= this.shutdown();
        return this._stopping;
    }

    private async shutdown(): Promise<void> {
        this.accept();
        const released = new Promise<void>((resolve) => this._server.close(() => resolve()));
        this.cutAll();
        await released;
    }

    private onConnection(client: Socket): void {
        this._attempts.push(performance.now());
        client.on('error', ignore);
        if (this._refusing || this._stopping) {
            client.destroy();
            return;
        }
        this._accepted++;
        const backend = connect({ host: this._targetHost, port: this._targetPort, allowHalfOpen: true, noDelay: true });
        const connection = new ProxiedConnection(client, backend, () => this._stalled);
        this._connections.add(connection);
        const forget = (): void => {
            if (!connection.open) {
                this._connections.delete(connection);
            }
        };
        client.once('close', forget);
        backend.once('close', forget);
    }
}
