import { isIP } from 'node:net';

import { Store, type IClientOptions, type Packet } from 'mqtt';

import { SESSION_NEVER_EXPIRES, type MqttConnectionSettings } from '../config/MqttConnectionSettings';

/**
 * Builds the MQTT.js client options. A new object each time: MQTT.js writes into it.
 */
export function toClientOptions(settings: MqttConnectionSettings): IClientOptions {
    const { connection: resolved, tls } = settings;
    const first = resolved.servers[0];
    const options: IClientOptions = {
        // Empty: an MQTT 5 broker assigns one in CONNACK, and MQTT.js uses it for the reconnects.
        clientId: settings.brokerAssignsClientId ? '' : settings.clientId,
        protocolVersion: settings.protocolVersion,
        // MQTT 3.1 names its protocol differently.
        protocolId: settings.protocolVersion === 3 ? 'MQIsdp' : 'MQTT',
        // False: the broker keeps our subscriptions and queues QoS 1/2 messages while we are away.
        // A broker-assigned id has no session to resume yet: a clean start (MQTT.js refuses clean
        // false with an empty id); MqttLink.start turns clean off for the reconnects once the id is known.
        clean: settings.cleanSession || settings.brokerAssignsClientId,
        // MQTT keepalive is in seconds; a value under one second rounds up, 0 turns it off.
        keepalive: Math.ceil(settings.keepAliveTimeout / 1000),
        // Per attempt. With failover servers each gets its share of connect_timeout, so a silent
        // first server cannot use up the whole wait of open().
        connectTimeout: Math.max(1, Math.floor(settings.connectTimeout / resolved.servers.length)),
        // A refused CONNACK after open() (a restarting broker answering "server unavailable", say)
        // must not end reconnecting for good; open() itself fails at the first refusal.
        reconnectOnConnackError: true,
        // MQTT.js moves to the next failover server on each reconnect, so several servers need
        // reconnects while opening even without retry_connect (the connection turns them off after).
        reconnectPeriod: settings.retryConnect || resolved.servers.length > 1 ? settings.reconnectTimeout : 0,
        // The connection restores its subscriptions itself after a reconnect.
        resubscribe: false,
        protocol: first.protocol,
        host: first.host,
        hostname: first.host,
        port: first.port,
    };
    if (settings.protocolVersion === 5) {
        // MQTT 5 ends a session at disconnect unless told otherwise; clean_session false means
        // what it means in 3.1.1 (kept until the broker's own limit) unless session_expiry says.
        const expiry = settings.sessionExpiry ?? (settings.cleanSession ? undefined : SESSION_NEVER_EXPIRES);
        options.properties = {};
        if (expiry !== undefined) options.properties.sessionExpiryInterval = expiry;
        if (settings.topicAliasMaximum > 0) {
            // What the broker may use towards us; towards the broker, MQTT.js keeps within its CONNACK maximum.
            options.properties.topicAliasMaximum = settings.topicAliasMaximum;
            options.autoAssignTopicAlias = true;
            options.autoUseTopicAlias = true;
            // Replays after a reconnect must not carry an alias of an earlier connection.
            options.outgoingStore = new ReplayCopyStore();
        }
    }
    if (first.path !== undefined) options.path = first.path;
    if (resolved.servers.length > 1) {
        options.servers = resolved.servers.map((s) => ({ protocol: s.protocol, host: s.host, port: s.port }));
    }
    if (tls !== undefined) {
        Object.assign(options, tls);
        followHostForServerName(options, tls.servername);
        // For wss, the WebSocket gets its TLS options from here (MQTT.js passes wsOptions to ws).
        if (resolved.servers.some((s) => s.protocol === 'wss')) options.wsOptions = { ...tls };
    }
    if (settings.will !== undefined) {
        const { topic, message, qos, retain } = settings.will;
        options.will = { topic, payload: Buffer.from(message, 'utf8'), qos, retain };
    }
    if (resolved.username !== undefined) options.username = resolved.username;
    if (resolved.password !== undefined) options.password = resolved.password;
    return options;
}

/**
 * MQTT.js sets `servername` to the host of the first TLS attempt and keeps it, so a failover
 * server would be checked against the first server's name. A getter gives each attempt the
 * configured name, or its own host (none for an IP address, which Node then checks itself).
 */
function followHostForServerName(options: IClientOptions, configured: string | undefined): void {
    Object.defineProperty(options, 'servername', {
        enumerable: true,
        configurable: true,
        get: () => configured ?? (options.host !== undefined && isIP(options.host) === 0 ? options.host : undefined),
        set: () => { /* MQTT.js's own choice is ignored: see above. */ },
    });
}

/**
 * MQTT.js's outgoing store, handing out copies when it replays.
 *
 * After a reconnect MQTT.js sends its stored QoS 1/2 publishes again, and with topic aliases on
 * it writes that connection's alias into the packet it sends (topic '' and the alias). That packet
 * is the stored one, so after one more drop the next connection would get an empty topic with an
 * alias it never saw: a protocol error, and the same again after every reconnect. Copies keep the
 * stored packets as MQTT.js stored them (full topic, no alias).
 */
class ReplayCopyStore extends Store {
    public override createStream(): ReturnType<Store['createStream']> {
        const stream = super.createStream();
        const push = stream.push.bind(stream);
        stream.push = (chunk: unknown): boolean => {
            if (chunk === null) return push(null);
            const packet = chunk as Packet & { properties?: object };
            return push({ ...packet, ...(packet.properties ? { properties: { ...packet.properties } } : {}) });
        };
        return stream;
    }
}
