// Network helpers for tests: free ports, deadlines, unique topics, a silent server.
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { randomBytes } from 'node:crypto';

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

/** A port nothing listens on: connecting to it is refused. */
export async function refusedPort(): Promise<number> {
    return freePort();
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
