import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { createServer as createTcpServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer, type TlsOptions } from 'node:tls';
import type { Aedes, AedesOptions, AuthenticateError, Client } from 'aedes' with { 'resolution-mode': 'import' };
import { createWebSocketStream, WebSocketServer } from 'ws';

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

/** TLS settings of a broker that listens with TLS (`mqtts://`, or `wss://` with websocket). */
export interface EmbeddedBrokerTlsOptions {
    /** The server's private key (PEM). */
    key: string | Buffer;
    /** The server's certificate (PEM), followed by any intermediate certificates. */
    cert: string | Buffer;
    /** The passphrase of an encrypted `key`. */
    passphrase?: string;
    /** CA certificates (PEM) that client certificates must chain to; default Node's root CAs. */
    ca?: string | Buffer | Array<string | Buffer>;
    /** Ask every client for a certificate (default false). */
    requestCert?: boolean;
    /**
     * With requestCert: refuse a client whose certificate is missing or does not chain to `ca`
     * (default true, as in Node; false accepts it anyway).
     */
    rejectUnauthorized?: boolean;
}

/** WebSocket settings of a broker that listens for MQTT over WebSocket. */
export interface EmbeddedBrokerWebSocketOptions {
    /** The HTTP path of the WebSocket endpoint; default `/mqtt` (MQTT.js's default). */
    path?: string;
}

/** How the broker is reached: plain TCP, TLS, WebSocket, WebSocket over TLS. */
export type EmbeddedBrokerTransport = 'tcp' | 'tls' | 'ws' | 'wss';

export interface EmbeddedBrokerOptions {
    /** TCP port to listen on; 0 (the default) picks a free port. */
    port?: number;
    /** Interface to listen on; default 127.0.0.1. */
    host?: string;
    /**
     * Listen with TLS: `mqtts://`, or `wss://` together with `websocket`. When omitted the broker
     * speaks plain TCP (`mqtt://`, or `ws://` with `websocket`).
     */
    tls?: EmbeddedBrokerTlsOptions;
    /**
     * Listen for MQTT over WebSocket (an HTTP, or with `tls` HTTPS, server) instead of MQTT over
     * TCP: `true` or `{ path }` (default path `/mqtt`). A WebSocket upgrade to another path is
     * answered with HTTP 400, a plain HTTP request with 426.
     */
    websocket?: boolean | EmbeddedBrokerWebSocketOptions;
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
 * It listens on one port with one transport: MQTT over TCP (`mqtt://`, the default), over TLS
 * (`mqtts://`, option `tls`), over WebSocket (`ws://host:port/mqtt`, option `websocket`) or over
 * WebSocket with TLS (`wss://`, both options); `url` names it, ready for MQTT.js. With
 * `tls.requestCert` clients must present a certificate that chains to `tls.ca`.
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
 * every socket first (the TCP connections under TLS and WebSocket too, handshakes in progress
 * included), so nothing more reaches any client. After `stop()` or `kill()`, `restart()` listens
 * again on the same port with the same transport.
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
 *
 *     const secure = await EmbeddedBroker.start({ tls: { key, cert }, websocket: true });
 *     secure.url;                                           // 'wss://127.0.0.1:<port>/mqtt'
 *     const wss = await mqtt.connectAsync(secure.url, { ca });  // trust the CA that signed cert
 */
export class EmbeddedBroker {
    public readonly host: string;
    /** The transport the broker listens with, from the options `tls` and `websocket`. */
    public readonly transport: EmbeddedBrokerTransport;
    private _port: number;
    private readonly _tls?: TlsOptions;
    /** With websocket: the HTTP path of the endpoint. */
    private readonly _wsPath?: string;
    private readonly _authenticate?: EmbeddedBrokerAuthenticate;
    private readonly _authorizeSubscribe?: (clientId: string, topic: string, qos: number) => boolean;
    private readonly _authorizePublish?: (clientId: string, topic: string) => boolean | 'hold';
    private readonly _keepSessions: boolean;
    /** With keepSessions: the persistence of the first Aedes instance, reused by every later one. */
    private _persistence?: object;
    private _aedes?: Aedes;
    private _server?: Server;
    /** Every open connection: TCP sockets, and with TLS also the TLS sockets on them. */
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
        if (options.tls) {
            const { key, cert, passphrase, ca, requestCert, rejectUnauthorized } = options.tls;
            this._tls = { key, cert, passphrase, ca, requestCert, rejectUnauthorized };
        }
        if (options.websocket) {
            this._wsPath = (options.websocket === true ? undefined : options.websocket.path) ?? '/mqtt';
            this.transport = this._tls ? 'wss' : 'ws';
        } else {
            this.transport = this._tls ? 'tls' : 'tcp';
        }
    }

    /** Starts a broker and resolves once it accepts connections. */
    public static async start(options: EmbeddedBrokerOptions = {}): Promise<EmbeddedBroker> {
        const broker = new EmbeddedBroker(options);
        await broker.listen();
        return broker;
    }

    /** The port the broker listens on (the actual one when started with port 0). */
    public get port(): number {
        return this._port;
    }

    /**
     * Where to connect, by transport: `mqtt://host:port`, `mqtts://host:port`,
     * `ws://host:port/mqtt` or `wss://host:port/mqtt` (with the configured path).
     */
    public get url(): string {
        const scheme = { tcp: 'mqtt', tls: 'mqtts', ws: 'ws', wss: 'wss' }[this.transport];
        return `${scheme}://${this.host}:${this._port}${this._wsPath ?? ''}`;
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
     * Disconnects every client, closes the server (TCP, TLS, HTTP or HTTPS) and Aedes. Resolves once the
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
     * more to them, then closes Aedes and the server. Resolves once the port is released;
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

        const server = this.createServer(aedes);
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

    /**
     * A server for the transport, not yet listening, that hands every MQTT connection to `aedes`
     * and records every socket (so kill() and shutdown() can destroy it).
     */
    private createServer(aedes: Aedes): Server {
        const track = (socket: Socket): void => {
            this._sockets.add(socket);
            socket.once('close', () => this._sockets.delete(socket));
        };
        let server: Server;
        if (this._wsPath === undefined) {
            const handle = (socket: Socket): void => {
                aedes.handle(socket);
            };
            server = this._tls ? createTlsServer(this._tls, handle) : createTcpServer(handle);
        } else {
            // noServer: ws would re-emit the server's errors (a listen failure) on itself, unhandled.
            const wss = new WebSocketServer({ noServer: true, path: this._wsPath });
            const refuse = (_request: IncomingMessage, response: ServerResponse): void => {
                response.writeHead(426, { Connection: 'close', Upgrade: 'websocket' }).end();
            };
            server = this._tls ? createHttpsServer(this._tls, refuse) : createHttpServer(refuse);
            server.on('upgrade', (request: IncomingMessage, socket: Socket, head: Buffer) => {
                wss.handleUpgrade(request, socket, head, (ws) => aedes.handle(createWebSocketStream(ws), request));
            });
        }
        // 'connection': each TCP socket as accepted (under TLS: before the handshake begins).
        server.on('connection', track);
        if (this._tls) {
            server.on('secureConnection', track);
        }
        return server;
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
