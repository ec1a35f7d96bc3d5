// Network helpers for tests: free ports, deadlines, unique topics, a silent server.
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';

export const HOST = '127.0.0.1';

/** A broker started for a test: where to connect and how to stop or bounce it. */
export interface TestBroker {
    kind: 'aedes' | 'mosquitto' | 'nats' | 'rabbitmq';
    url: string;
    host: string;
    port: number;
    stop(): Promise<void>;
    restart(): Promise<void>;
}

// ---------------------------------------------------------------- generic helpers

/** A TCP port that was free a moment ago (bind to port 0, read it, close). */
export async function freePort(): Promise<number> {
    const server = createServer();
    await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, HOST, () => resolve());
    });
    const port = (server.address() as AddressInfo).port;
    await new Promise<void>((resolve) => server.close(() => resolve()));
    return port;
}

/** The first port of the range the system hands out for port 0 (Linux: ip_local_port_range). */
function ephemeralLow(): number {
    try {
        const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
        if (Number.isInteger(low) && low > 2048) return low;
    } catch {
        // not Linux: the IANA range
    }
    return 49152;
}

/**
 * A port nothing listens on: connecting to it is refused. It is taken below the range of ports
 * the system hands out for port 0, from which every broker, proxy and server of the tests gets
 * its port, so a test in another process running at the same time cannot start listening on it
 * (a port from freePort() could be handed to one a moment later). Checked free by binding it.
 */
export async function refusedPort(): Promise<number> {
    const high = ephemeralLow() - 1;
    const low = Math.max(1024, high - 20000);
    for (let attempt = 0; attempt < 100; attempt++) {
        const port = low + Math.floor(Math.random() * (high - low + 1));
        const server = createServer();
        const bound = await new Promise<boolean>((resolve) => {
            server.once('error', () => resolve(false));
            server.listen(port, HOST, () => resolve(true));
        });
        if (bound) {
            await new Promise<void>((resolve) => server.close(() => resolve()));
            return port;
        }
    }
    throw new Error(`no free port between ${low} and ${high}`);
}

/** Polls `condition` every 10 ms until it is true; rejects naming `what` after `timeoutMs`. */
export async function waitFor(
    condition: () => boolean | Promise<boolean>,
    timeoutMs = 5000,
    what = 'condition',
): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
        if (await condition()) {
            return;
        }
        if (Date.now() >= deadline) {
            throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
        }
        await delay(10);
    }
}

let topicCounter = 0;

/** A topic no other call returns: `prefix/<random hex>-<counter>`. */
export function uniqueTopic(prefix = 'test'): string {
    topicCounter++;
    return `${prefix}/${randomBytes(4).toString('hex')}-${topicCounter}`;
}

/** A TCP server that accepts connections and never answers (a silent broker). */
export async function silentServer(): Promise<{ url: string; port: number; stop(): Promise<void> }> {
    const sockets = new Set<Socket>();
    const server = createServer((socket) => {
        sockets.add(socket);
        socket.on('error', () => undefined);
        socket.once('close', () => sockets.delete(socket));
    });
    await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, HOST, () => resolve());
    });
    const port = (server.address() as AddressInfo).port;
    let stopped: Promise<void> | undefined;
    return {
        url: `mqtt://${HOST}:${port}`,
        port,
        stop: () => {
            stopped ??= new Promise<void>((resolve) => {
                server.close(() => resolve());
                for (const socket of sockets) {
                    socket.destroy();
                }
            });
            return stopped;
        },
    };
}

export function delay(ms: number): Promise<void> {
    return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Resolves true when a TCP connection to host:port succeeds within a short timeout. */
export function canConnect(port: number): Promise<boolean> {
    return new Promise((resolve) => {
        const socket = connect({ host: HOST, port });
        const done = (ok: boolean): void => {
            socket.destroy();
            resolve(ok);
        };
        socket.setTimeout(500, () => done(false));
        socket.once('connect', () => done(true));
        socket.once('error', () => done(false));
    });
}
