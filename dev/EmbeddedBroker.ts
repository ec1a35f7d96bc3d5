import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import type { Aedes, AedesOptions, AuthenticateError, Client } from 'aedes' with { 'resolution-mode': 'import' };

import { SharedSubscriptions } from './SharedSubscriptions';

/**
 * Decides whether a client may connect. Return `false` (or throw) to refuse the
 * connection with CONNACK return code 4 (bad user name or password).
 */
export type EmbeddedBrokerAuthenticate = (
    clientId: string,
    username: string | undefined,
    password: Buffer | undefined,
) => boolean;

export interface EmbeddedBrokerOptions {
    /** TCP port to listen on; 0 (the default) picks a free port. */
    port?: number;
    /** Interface to listen on; default 127.0.0.1. */
    host?: string;
    /** Optional credential check; when omitted every client is accepted. */
    authenticate?: EmbeddedBrokerAuthenticate;
    /**
     * Optional subscription check; return false to refuse a topic filter (at the asked QoS), which the broker
     * answers with SUBACK failure (0x80). Shared subscriptions are checked with their full filter
     * (`$share/<group>/<filter>`). When omitted every well-formed subscription is accepted.
     */
    authorizeSubscribe?: (clientId: string, topic: string, qos: number) => boolean;
    /**
     * Optional publish check: `true` accepts, `false` refuses (the broker then closes the
     * client's connection, as MQTT 3.1.1 brokers do), `'hold'` never answers, so a QoS 1 or 2
     * publish stays unacknowledged. When omitted every publish is accepted.
     */
    authorizePublish?: (clientId: string, topic: string) => boolean | 'hold';
    /**
     * Keep sessions and retained messages across `restart()` and `kill()`, like a broker with
     * persistence (default false: every start begins empty). See the class comment.
     */
    keepSessions?: boolean;
}

/** CONNACK return code for "bad user name or password" (MQTT 3.1.1, 3.2.2.3). */
const BAD_USERNAME_OR_PASSWORD = 4;

/**
 * Aedes keeps the persistence it runs on as `aedes.persistence` (not in its typings): the one
 * passed in its options or, when none is, the in-memory aedes-persistence it creates in listen().
 * Opaque here: it is only handed back to the next Aedes instance.
 */
type AedesWithPersistence = Aedes & { readonly persistence: object };

/**
 * An in-process MQTT broker (Aedes, in memory) for development, demos and tests.
 *
 * Sessions and retained messages live in memory. By default `restart()` starts a fresh
 * Aedes instance on the same port with empty storage, so persistent sessions and retained
 * messages are lost, as after a restart of a broker without persistence. With
 * `keepSessions: true` every Aedes instance this broker starts uses the same in-memory
 * persistence (the one the first instance created), so what a broker with persistence keeps
 * survives `restart()` and `kill()`: persistent sessions (clean=false) with their
 * subscriptions and the QoS 1/2 messages queued for them (including those sent but not yet
 * acknowledged), and retained messages. Each instance has a new Aedes id, as a restarted
 * Mosquitto is a new process.
 *
 * `stop()` lets Aedes close every client itself: while it does, it may still write to clients
 * not closed yet (deliveries in progress, wills). `kill()` simulates a crash instead: it destroys
 * every socket first, so nothing more reaches any client. After `stop()` or `kill()`,
 * `restart()` listens again on the same port.
 *
 * MQTT shared subscriptions (`$share/<group>/<filter>`), which Aedes lacks, are added
 * by {@link SharedSubscriptions}: each message matching `<filter>` goes to exactly one
 * connected member of each group subscribed to it, round robin, at the lower of the
 * message's QoS and the member's granted QoS, and never as a retained message. Aedes
 * keeps the literal `$share/...` subscription (so SUBACK, UNSUBSCRIBE and disconnect work
 * as usual) and reports who joins and leaves a group; one extra broker-level subscription
 * per group and filter hands each message to a member. A client whose other subscriptions
 * match the same message gets it once. A malformed shared filter (`$share/g`, `$share//f`,
 * `$share/+/f`) is refused with SUBACK 0x80, and nothing published to a topic name
 * beginning with `$share/` is delivered.
 *
 * ### Example ###
 *
 *     const broker = await EmbeddedBroker.start();          // free port on 127.0.0.1
 *     const client = await mqtt.connectAsync(broker.url);
 *     ...
 *     await client.endAsync();
 *     await broker.stop();
 *
 *     const durable = await EmbeddedBroker.start({ keepSessions: true });
 *     ...
 *     await durable.kill();                                 // crash: every connection drops
 *     await durable.restart();                              // same port, sessions kept
 */
export class EmbeddedBroker {
    public readonly host: string;
    private _port: number;
    private readonly _authenticate?: EmbeddedBrokerAuthenticate;
    private readonly _authorizeSubscribe?: (clientId: string, topic: string, qos: number) => boolean;
    private readonly _authorizePublish?: (clientId: string, topic: string) => boolean | 'hold';
    private readonly _keepSessions: boolean;
    /** With keepSessions: the persistence of the first Aedes instance, reused by every later one. */
    private _persistence?: object;
    private _aedes?: Aedes;
    private _server?: Server;
    private readonly _sockets = new Set<Socket>();
    private _connections = 0;
    private _stopping?: Promise<void>;

    private constructor(options: EmbeddedBrokerOptions) {
        this.host = options.host ?? '127.0.0.1';
        this._port = options.port ?? 0;
        this._authenticate = options.authenticate;
        this._authorizeSubscribe = options.authorizeSubscribe;
        this._authorizePublish = options.authorizePublish;
        this._keepSessions = options.keepSessions ?? false;
    }

    /** Starts a broker and resolves once it accepts TCP connections. */
    public static async start(options: EmbeddedBrokerOptions = {}): Promise<EmbeddedBroker> {
        const broker = new EmbeddedBroker(options);
        await broker.listen();
        return broker;
    }

    /** The port the broker listens on (the actual one when started with port 0). */
    public get port(): number {
        return this._port;
    }

    /** `mqtt://host:port` */
    public get url(): string {
        return `mqtt://${this.host}:${this._port}`;
    }

    /** Clients currently connected (CONNECT accepted and not yet gone). */
    public clientCount(): number {
        return this._aedes?.connectedClients ?? 0;
    }

    /** CONNECTs accepted since start(); not reset by restart(). */
    public connectionCount(): number {
        return this._connections;
    }

    /**
     * Disconnects every client, closes the TCP server and Aedes. Resolves once the
     * port is released. Idempotent; concurrent calls share one shutdown.
     */
    public async stop(): Promise<void> {
        this._stopping ??= this.shutdown().finally(() => {
            this._stopping = undefined;
        });
        return this._stopping;
    }

    /**
     * Simulates a crash: destroys every client socket at once, before Aedes can write anything
     * more to them, then closes Aedes and the TCP server. Resolves once the port is released;
     * `restart()` then listens on it again. With keepSessions, sessions survive as they do a
     * `restart()`. Concurrent with `stop()`, it cuts the sockets and shares that shutdown.
     */
    public async kill(): Promise<void> {
        for (const socket of this._sockets) {
            socket.destroy();
        }
        await this.stop();
    }

    /**
     * Stops the broker if it runs (as `stop()` does) and listens again on the same port with a
     * new Aedes instance: empty, or with the kept sessions when started with keepSessions.
     * Also starts the broker again after `stop()` or `kill()`.
     */
    public async restart(): Promise<void> {
        await this.stop();
        await this.listen();
    }

    private async listen(): Promise<void> {
        if (this._server) {
            return;
        }
        const { Aedes } = await import('aedes');
        // aedes.close() leaves its persistence alone (it closes clients and mq, never calls
        // persistence.destroy()), and a persistent client's close only drops its in-memory
        // routing, not its stored subscriptions, so the next instance can take the persistence over.
        const options: AedesOptions = this._persistence ? { persistence: this._persistence } : {};
        const check = this._authenticate;
        if (check) {
            options.authenticate = (client, username, password, done) => {
                let accepted = false;
                try {
                    accepted = check(client.id, username, password);
                } catch {
                    accepted = false;
                }
                if (accepted) {
                    done(null, true);
                    return;
                }
                // A plain `done(null, false)` makes Aedes answer with return code 5
                // (not authorized); the code must be carried by the error instead.
                const error: AuthenticateError = Object.assign(new Error('bad user name or password'), {
                    returnCode: BAD_USERNAME_OR_PASSWORD,
                });
                done(error, false);
            };
        }
        const allow = this._authorizeSubscribe;
        // A null subscription is Aedes' way to answer SUBACK 0x80 for this filter.
        options.authorizeSubscribe = (client, subscription, done) => {
            const { topic, qos } = subscription;
            const accepted = SharedSubscriptions.acceptsFilter(topic) && (!allow || allow(client.id, topic, qos));
            done(null, accepted ? subscription : null);
        };
        options.authorizeForward = (_client, packet) => (SharedSubscriptions.forwards(packet.topic) ? packet : null);
        const publishCheck = this._authorizePublish;
        if (publishCheck) {
            options.authorizePublish = (client, packet, done) => {
                const verdict = client ? publishCheck(client.id, packet.topic) : true;
                if (verdict === 'hold') return;
                done(verdict ? null : new Error('publish refused'));
            };
        }
        const aedes = await Aedes.createBroker(options);
        if (this._keepSessions) {
            this._persistence ??= (aedes as AedesWithPersistence).persistence;
        }
        SharedSubscriptions.attach(aedes);
        // 'client' fires when a CONNECT is accepted, before the CONNACK is written, so the count
        // is already up to date when the client sees its CONNACK ('clientReady' comes later).
        aedes.on('client', (_client: Client) => {
            this._connections++;
        });

        const server = createServer((socket) => {
            this._sockets.add(socket);
            socket.once('close', () => this._sockets.delete(socket));
            aedes.handle(socket);
        });
        try {
            await new Promise<void>((resolve, reject) => {
                server.once('error', reject);
                server.listen(this._port, this.host, () => {
                    server.off('error', reject);
                    resolve();
                });
            });
        } catch (err) {
            await new Promise<void>((resolve) => aedes.close(() => resolve()));
            throw err;
        }
        this._port = (server.address() as AddressInfo).port;
        this._aedes = aedes;
        this._server = server;
    }

    private async shutdown(): Promise<void> {
        const server = this._server;
        const aedes = this._aedes;
        this._server = undefined;
        this._aedes = undefined;
        if (!server || !aedes) {
            return;
        }
        // Stop accepting first; the callback fires once every connection has ended.
        const released = new Promise<void>((resolve) => server.close(() => resolve()));
        await new Promise<void>((resolve) => aedes.close(() => resolve()));
        // Aedes only closes registered clients; drop half-open and unauthenticated ones too.
        for (const socket of this._sockets) {
            socket.destroy();
        }
        this._sockets.clear();
        await released;
    }
}
