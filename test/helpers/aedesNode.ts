// One node of the Aedes cluster of the cluster suites (see aedesCluster.ts), run as a child
// process: `node aedesNode.js <config.json>`. It serves MQTT on its port with Aedes, keeps every
// session in Redis (aedes-persistence-redis) and passes every message through Redis pub/sub
// (mqemitter-redis), so the nodes sharing one Redis are one broker: a client may connect to any
// of them, and a persistent session outlives the node it was on. Its log (appended, every line
// starting with `[<pid>]`) tells when it listens, each connection and takeover, and every error.
import { createRequire } from 'node:module';
import * as fs from 'node:fs';
import { createServer, type Socket } from 'node:net';

import type { Aedes, Client } from 'aedes' with { 'resolution-mode': 'import' };
import { Redis } from 'ioredis';
import mqemitterRedis from 'mqemitter-redis';

/** What aedesCluster.ts writes into the node's config file before each start. */
export interface AedesNodeConfig {
    /** For the log: `aedes-1`. */
    readonly name: string;
    readonly host: string;
    /** The MQTT port, the same across restarts. */
    readonly port: number;
    /** The cluster's private Redis, on the same host. */
    readonly redisPort: number;
    /** The node's log, appended across restarts. */
    readonly logFile: string;
}

/** The part of aedes-persistence-redis used here (the package has no typings): the factory, given our connection and the queue limit. */
type RedisPersistenceFactory = (options: { conn: Redis; maxSessionDelivery: number }) => object;

/** mqemitter-redis reports a lost Redis on `state` (missing from its typings); without a listener the error would end the process. */
type EmitterWithState = ReturnType<typeof mqemitterRedis> & { readonly state: NodeJS.EventEmitter };

/**
 * How many queued messages a resumed session gets at its CONNACK. The rest wait for its next
 * reconnect while new messages flow past them, and nothing tells the client: with the default of
 * aedes-persistence-redis (1000; a stream of a few thousand messages a second builds that backlog
 * in a failover of half a second) the older part of a backlog is held back silently. This is more
 * than any test queues.
 */
const MAX_SESSION_DELIVERY = 1_000_000;
/** How long a graceful stop may take before the node exits anyway (the helper kills it a little later). */
const STOP_LIMIT_MS = 5_000;

async function main(configFile: string): Promise<void> {
    const config = JSON.parse(fs.readFileSync(configFile, 'utf8')) as AedesNodeConfig;
    // Synchronous, so nothing logged is lost when the helper kills the node.
    const log = (line: string): void => fs.appendFileSync(config.logFile, `[${process.pid}] ${new Date().toISOString()} ${config.name} ${line}\n`);
    const redis = { host: config.host, port: config.redisPort };

    // Aedes is ESM only; this script is CommonJS. aedes-persistence-redis is CommonJS without typings.
    const { Aedes } = await import('aedes');
    const redisPersistence = createRequire(__filename)('aedes-persistence-redis') as RedisPersistenceFactory;

    // Our own connection, so its errors (Redis gone at the cluster's stop) are logged, not printed by ioredis.
    const store = new Redis(redis);
    store.on('error', (err: Error) => log(`persistence redis error: ${err.message}`));
    const persistence = redisPersistence({ conn: store, maxSessionDelivery: MAX_SESSION_DELIVERY });
    const mq = mqemitterRedis(redis) as EmitterWithState;
    mq.state.on('error', (err: Error) => log(`mqemitter redis error: ${err.message}`));

    // The clients that have their CONNACK (see authorizeForward).
    const acknowledged = new WeakSet<Client>();
    const heldBack = new WeakMap<Client, number>();
    // The Aedes id stays random (its default): a restarted node is a new broker. A fixed id would
    // restart its message counter, and stored messages are keyed `packet:<broker id>:<counter>`:
    // a new message would overwrite one still queued for an offline session.
    const aedes: Aedes = await Aedes.createBroker({
        persistence,
        mq,
        // Aedes resumes a session by subscribing its stored subscriptions to the emitter first and
        // writing the CONNACK a few Redis round trips later; a message published meanwhile went out
        // before the CONNACK, against MQTT-3.2.0-1. MQTT.js 5 then hangs: it cannot send the
        // PUBACK before its CONNACK, and handles no packet after the PUBLISH until it has, so it
        // never sees the CONNACK, nor that the connection closed, until its connect timeout. Such
        // a message is not lost when held back: it was queued in Redis for the session before it
        // was emitted, and the queue goes out right after the CONNACK. (Only a QoS 0 message to a
        // resumed session is dropped, as QoS 0 may be.)
        authorizeForward: (client, packet) => {
            if (acknowledged.has(client)) return packet;
            heldBack.set(client, (heldBack.get(client) ?? 0) + 1);
            return null;
        },
    });
    aedes.on('connackSent', (_connack, client: Client) => {
        acknowledged.add(client);
        const count = heldBack.get(client);
        if (count !== undefined) log(`client ${client.id}: ${count} deliveries before its CONNACK held back (they go out with its queue)`);
    });
    aedes.on('client', (client: Client) => log(`client ${client.id} connected (clean ${String(client.clean)})`));
    aedes.on('clientDisconnect', (client: Client) => log(`client ${client.id} disconnected`));
    aedes.on('clientError', (client: Client, err: Error) => log(`client ${client.id} error: ${err.message}`));
    aedes.on('connectionError', (_client: Client, err: Error) => log(`connection error: ${err.message}`));
    aedes.on('keepaliveTimeout', (client: Client) => log(`client ${client.id} keepalive timeout`));
    // Aedes emits 'error' (not in its typings) when a Redis operation of a publish fails: without a listener that would end the node.
    (aedes as NodeJS.EventEmitter).on('error', (err: Error) => log(`aedes error: ${err.message}`));

    const sockets = new Set<Socket>();
    const server = createServer((socket) => {
        sockets.add(socket);
        socket.once('close', () => sockets.delete(socket));
        aedes.handle(socket);
    });
    server.on('error', (err: Error) => {
        log(`listen error: ${err.message}`);
        process.exit(1);
    });
    server.listen(config.port, config.host, () => log(`aedes ${aedes.id} listening on ${config.host}:${config.port}`));

    let stopping = false;
    process.on('SIGTERM', () => {
        if (stopping) return;
        stopping = true;
        log('SIGTERM: closing the clients, Aedes and the Redis connections');
        setTimeout(() => {
            log(`not stopped within ${STOP_LIMIT_MS} ms: exiting`);
            process.exit(0);
        }, STOP_LIMIT_MS).unref();
        server.close();
        aedes.close(() => {
            for (const socket of sockets) socket.destroy();
            // Aedes has closed its emitter; the persistence's connection is ours to quit.
            store.quit().catch((err: Error) => log(`persistence close error: ${err.message}`)).finally(() => {
                log('stopped');
                process.exit(0);
            });
        });
    });
}

main(process.argv[2] ?? '').catch((err: Error) => {
    process.stderr.write(`aedes node failed to start: ${err.stack ?? err.message}\n`);
    process.exit(1);
});
