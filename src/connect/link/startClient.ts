import { connect, type IPublishPacket, type MqttClient, type Packet } from 'mqtt';
import { ConnectionException } from 'pip-services3-commons-nodex';

import { cid } from '../../shared/pip';
import { endClient } from './endClient';
import type { MqttResolvedConnection } from '../config/MqttConnectionResolver';
import { sessionOutlivesConnection, toClientOptions, type MqttConnectionSettings } from '../config/MqttConnectionSettings';
import { MqttErrorCode } from '../errors/MqttErrorCode';
import { MqttReconnector, type MqttReconnectorEvents } from './MqttReconnector';
import type { MqttTlsOptions } from '../config/MqttTls';
import { waitForConnack } from './waitForConnack';

/** A message as MQTT.js emits it. */
export type MqttIncoming = [topic: string, payload: Buffer, packet: IPublishPacket];

/** What [[startClient]] needs. */
export interface MqttClientStart {
    readonly correlationId: string | null;
    readonly settings: MqttConnectionSettings;
    readonly resolved: MqttResolvedConnection;
    /** The loaded TLS options when a server uses mqtts or wss. */
    readonly tls?: MqttTlsOptions;
    /** Receives a function that aborts the wait for the first CONNACK with the given error. */
    readonly onAbort: (abort: (err: Error) => void) => void;
    readonly reconnectorEvents: MqttReconnectorEvents;
}

/** A client that has its first CONNACK. */
export interface MqttStartedClient {
    readonly client: MqttClient;
    readonly reconnector: MqttReconnector;
    /**
     * Stops keeping messages and returns those that came with or after the CONNACK (a broker that
     * kept the session sends its queued messages right behind it, in the same read). Call it in
     * the same turn as the listener that takes over is added.
     */
    takeEarly(): MqttIncoming[];
}

/**
 * Creates an MQTT.js client with its reconnector and waits for its first CONNACK (see
 * [[waitForConnack]]). When that fails, it leaves no client, timer or reconnect loop behind.
 *
 * @throws ConnectionException `MQTT_CONNECT_FAILED`, `MQTT_CONNECT_TIMEOUT`, `MQTT_CONNECT_REFUSED` or `MQTT_TLS_FAILED`,
 *   or what the abort function was given.
 */
export async function startClient(start: MqttClientStart): Promise<MqttStartedClient> {
    const { correlationId, settings, resolved } = start;
    let client: MqttClient;
    try {
        client = connect(toClientOptions(settings, resolved, start.tls));
    } catch (err) {
        throw new ConnectionException(cid(correlationId), MqttErrorCode.ConnectFailed,
            `Cannot connect to MQTT broker at ${resolved.displayUri}: ${(err as Error).message}`).withCause(err as Error);
    }
    // MQTT 5: a broker may impose a keepalive (server keepalive). MQTT.js honours it only while
    // its own keepalive is on; with keepalive_timeout 0 it would never ping, and the broker would
    // drop the connection. Seen before MQTT.js handles the CONNACK, so its keepalive timer uses it.
    // Each CONNACK decides anew: a failover broker without a server keepalive gets ours again.
    // (Only then: a listener on every packet costs every message a call.)
    const ownKeepAlive = client.options.keepalive;
    if (ownKeepAlive === 0) {
        client.on('packetreceive', (packet: Packet) => {
            if (packet.cmd !== 'connack') return;
            const serverKeepAlive = packet.properties?.serverKeepAlive;
            client.options.keepalive = serverKeepAlive !== undefined && serverKeepAlive > 0 ? serverKeepAlive : ownKeepAlive;
        });
        // The next CONNECT must announce our own keepalive again (not the last server's).
        client.on('close', () => { client.options.keepalive = ownKeepAlive; });
    }
    const early: MqttIncoming[] = [];
    const keepEarly = (...message: MqttIncoming): void => { early.push(message); };
    client.on('message', keepEarly);
    const reconnector = new MqttReconnector(client, settings.reconnectTimeout, settings.maxReconnectTimeout, start.reconnectorEvents);
    try {
        await waitForConnack(client, {
            correlationId,
            displayUri: resolved.displayUri,
            connectTimeout: settings.connectTimeout,
            retry: settings.retryConnect,
            attempts: resolved.servers.length,
            onAbort: start.onAbort,
        });
    } catch (err) {
        client.off('message', keepEarly);
        reconnector.stop();
        await endClient(client, false);
        throw err;
    }
    // MQTT 5: a broker-assigned client id. MQTT.js does not keep it, so reconnects would send an
    // empty id again and get a new session; with it they resume this one.
    const assigned = client.serverProperties?.assignedClientIdentifier;
    if (settings.brokerAssignsClientId && typeof assigned === 'string' && assigned !== '') client.options.clientId = assigned;
    // Failover servers are tried through MQTT.js reconnects; without retry_connect, no more of them.
    if (!settings.retryConnect) reconnector.disable();
    // MQTT 5 with a session expiry: a clean start at open(), and reconnects resume the session.
    if (sessionOutlivesConnection(settings)) client.options.clean = false;
    return {
        client,
        reconnector,
        takeEarly: () => {
            client.off('message', keepEarly);
            return early;
        },
    };
}
