import type { MqttClient } from 'mqtt';

/** How long a graceful DISCONNECT may take before the socket is destroyed. */
const GRACEFUL_END_MS = 2000;
/** How long to wait for the socket's 'close' once it was destroyed. */
const CLOSE_WAIT_MS = 2000;

/**
 * Ends an MQTT.js client and resolves when it has ended, with no reconnect timer, CONNACK
 * timer, keepalive timer or socket left behind. Sends DISCONNECT first when `graceful`, the
 * client is connected and nothing is in flight; otherwise (or when the broker does not close
 * the socket within two seconds) destroys the socket.
 *
 * MQTT.js clears its CONNACK timer in its own 'close' handler, so that handler must stay and
 * the socket's 'close' must have happened before this resolves.
 */
export async function endClient(client: MqttClient, graceful: boolean): Promise<void> {
    // Errors while shutting down (a reset socket, say) are expected and must not crash the process.
    client.on('error', ignore);
    const force = !(graceful && client.connected && Object.keys(client.outgoing).length === 0);
    let timer: NodeJS.Timeout | undefined;
    await new Promise<void>((resolve) => {
        client.end(force, {}, () => resolve());
        if (!force) {
            timer = setTimeout(() => client.stream?.destroy(), GRACEFUL_END_MS);
        }
    });
    clearTimeout(timer);
    await socketClosed(client);
}

async function socketClosed(client: MqttClient): Promise<void> {
    const stream = client.stream as (MqttClient['stream'] & { closed?: boolean }) | undefined;
    if (!stream || stream.closed === true) return;
    stream.destroy();
    let timer: NodeJS.Timeout | undefined;
    await new Promise<void>((resolve) => {
        stream.once('close', () => resolve());
        timer = setTimeout(resolve, CLOSE_WAIT_MS);
    });
    clearTimeout(timer);
}

function ignore(): void {
    // Deliberately empty.
}
