import { inspect } from 'node:util';

import { ConfigException, ConfigParams, Descriptor, type IReferenceable, type IReferences, type IConfigurable } from 'pip-services3-commons-nodex';
import { ConnectionParams, type IDiscovery } from 'pip-services3-components-nodex';

import { MqttErrorCode } from '../errors/MqttErrorCode';
import { resolveCredential, tlsSources } from './MqttCredentials';
import { configConflict } from '../errors/MqttErrors';
import { firstTlsKey, type MqttTlsSources } from './MqttTls';
import { cid, nonEmpty } from '../../shared/pip';
import { redactConfig } from './redact';

/** The MQTT transports, with their default ports. */
export type MqttProtocol = 'mqtt' | 'mqtts' | 'ws' | 'wss';

const DEFAULT_PORTS: Readonly<Record<MqttProtocol, number>> = { mqtt: 1883, mqtts: 8883, ws: 80, wss: 443 };

const PROTOCOL_ALIASES: Readonly<Record<string, MqttProtocol>> = {
    mqtt: 'mqtt', tcp: 'mqtt',
    mqtts: 'mqtts', ssl: 'mqtts', tls: 'mqtts',
    ws: 'ws',
    wss: 'wss',
};

/** The default WebSocket path when neither the uri nor `path` names one. */
export const DEFAULT_WS_PATH = '/mqtt';

/** Query parameters a `uri` may carry, each mapped to the configuration key it stands for. */
const URI_QUERY_KEYS: Readonly<Record<string, string>> = {
    client_id: 'client_id',
    clientId: 'client_id',
    retry_connect: 'options.retry_connect',
    connect_timeout: 'options.connect_timeout',
    reconnect_timeout: 'options.reconnect_timeout',
    max_reconnect_timeout: 'options.max_reconnect_timeout',
    keepalive_timeout: 'options.keepalive_timeout',
    clean_session: 'options.clean_session',
    max_offline_messages: 'options.max_offline_messages',
    protocol_version: 'options.protocol_version',
    session_expiry: 'options.session_expiry',
    broker_assigns_client_id: 'options.broker_assigns_client_id',
    topic_alias_maximum: 'options.topic_alias_maximum',
    ssl_server_name: 'options.ssl_server_name',
    ssl_reject_unauthorized: 'options.ssl_reject_unauthorized',
};

/** One broker address. */
export interface MqttServer {
    readonly protocol: MqttProtocol;
    readonly host: string;
    readonly port: number;
    /** The WebSocket path (ws and wss only). */
    readonly path?: string;
}

/** What [[MqttConnectionResolver.resolve]] returns: where the broker is and who we are. */
export interface MqttResolvedConnection {
    /** The brokers, in failover order (at least one). */
    readonly servers: readonly MqttServer[];
    readonly username?: string;
    readonly password?: string;
    /** The TLS files and passphrase from the credential (empty when none is set). */
    readonly tls: MqttTlsSources;
    /**
     * Settings carried by the uri query (`?client_id=...&connect_timeout=...`), by their
     * configuration key (`client_id`, `options.connect_timeout`, ...).
     */
    readonly uriOptions: ConfigParams;
    /** The broker addresses for logs: no user info, no query. */
    readonly displayUri: string;
}

/** Converts a configured protocol or uri scheme to an MQTT protocol, or null when unknown. */
export function toMqttProtocol(value: string): MqttProtocol | null {
    return PROTOCOL_ALIASES[value.toLowerCase()] ?? null;
}

/** The default port of an MQTT protocol: 1883, 8883, 80 or 443. */
export function defaultPort(protocol: MqttProtocol): number {
    return DEFAULT_PORTS[protocol];
}

/**
 * Resolves MQTT broker addresses and credentials from configuration, a discovery service
 * and a credential store. Checks every value and reports the configuration key at fault.
 *
 * ### Configuration parameters ###
 *
 * - __connection(s)__: one broker (`connection.*`) or several for failover (`connections.N.*`)
 *   - __discovery_key__:  (optional) key to resolve the connection in an IDiscovery
 *   - __uri__:            (optional) `protocol://[user[:password]@]host[:port][/path][?query]`;
 *                         query keys: client_id (or clientId), retry_connect, connect_timeout, reconnect_timeout,
 *                         max_reconnect_timeout, keepalive_timeout, clean_session, max_offline_messages,
 *                         protocol_version, session_expiry, broker_assigns_client_id, topic_alias_maximum,
 *                         ssl_server_name, ssl_reject_unauthorized
 *   - __protocol__:       (optional) mqtt (default), mqtts, ws, wss; aliases tcp = mqtt, ssl and tls = mqtts
 *   - __host__:           host name or IP address (required unless in the uri)
 *   - __port__:           (optional) port; default by protocol: 1883, 8883, 80, 443
 *   - __path__:           (optional) WebSocket path for ws and wss (default: /mqtt)
 * - __credential(s)__: one credential (`credential.*`) or several (`credentials.N.*`, which then replace
 *                      `credential.*`): the first without a store_key, else the first found in a store
 *   - __store_key__:      (optional) key to look the credential up in an ICredentialStore
 *   - __username__:       (optional) user name
 *   - __password__:       (optional) password
 *   - __ssl_ca_file__:    (optional) PEM file of the certificate authorities to trust (mqtts, wss);
 *                         default: Node's built-in root certificates
 *   - __ssl_crt_file__:   (optional) PEM file of the client certificate (alias: ssl_cert_file)
 *   - __ssl_key_file__:   (optional) PEM file of the client certificate's private key
 *   - __ssl_passphrase__: (optional) passphrase of an encrypted private key
 *
 * A value may be given in the uri or as its own key; when both are given they must agree,
 * otherwise resolve() fails with `MQTT_CONFLICTING_CONFIG`. A credential found in a store by
 * `store_key` is completed by the keys configured beside `store_key` that it lacks; a key set in
 * both must agree.
 *
 * ### References ###
 *
 * - `*:discovery:*:*:1.0`          (optional) IDiscovery services to resolve connections
 * - `*:credential-store:*:*:1.0`   (optional) credential stores to resolve credentials
 *
 * ### Example ###
 *
 *     const resolver = new MqttConnectionResolver();
 *     resolver.configure(ConfigParams.fromTuples('connection.uri', 'mqtt://localhost:1883'));
 *     const { servers } = await resolver.resolve('123');
 */
export class MqttConnectionResolver implements IConfigurable, IReferenceable {
    private _config: ConfigParams = new ConfigParams();
    private _references: IReferences | null = null;

    public configure(config: ConfigParams): void {
        this._config = config;
    }

    public setReferences(references: IReferences): void {
        this._references = references;
    }

    /** For JSON.stringify: the configuration with secrets replaced by `***`. */
    public toJSON(): Record<string, unknown> {
        return { component: 'MqttConnectionResolver', config: redactConfig(this._config) };
    }

    /** For console.log and util.inspect: what toJSON() shows, so no secret is printed. */
    public [inspect.custom](): Record<string, unknown> {
        return this.toJSON();
    }

    /**
     * Resolves and checks the configured brokers and credentials.
     *
     * @param correlationId (optional) transaction id to trace execution through the call chain.
     * @throws ConfigException with an `MQTT_*` code from [[MqttErrorCode]] and `details.key`.
     */
    public async resolve(correlationId: string | null): Promise<MqttResolvedConnection> {
        const connections = await this.resolveConnections(correlationId);
        const credential = await resolveCredential(correlationId, this._config, this._references);

        const uriOptions = new ConfigParams();
        let uriUser: { username?: string; password?: string } | null = null;
        const servers: MqttServer[] = [];
        for (const { key, params } of connections) {
            const parsed = parseConnection(correlationId, params, key);
            servers.push(parsed.server);
            for (const [name, value] of Object.entries(parsed.query)) {
                const previous = uriOptions.getAsNullableString(name);
                if (previous != null && previous !== value) {
                    throw configConflict(correlationId, `${key}.uri`, `query parameter for '${name}' differs between connections`);
                }
                uriOptions.setAsObject(name, value);
            }
            if (parsed.username !== undefined || parsed.password !== undefined) {
                if (uriUser != null && (uriUser.username !== parsed.username || uriUser.password !== parsed.password)) {
                    throw configConflict(correlationId, `${key}.uri`, 'user info differs between connections');
                }
                uriUser = { username: parsed.username, password: parsed.password };
            }
        }
        checkFailover(correlationId, connections.map((c) => c.key), servers);

        const value = (name: string): string | undefined => nonEmpty(credential?.values.getAsNullableString(name));
        const prefix = credential?.key ?? 'credential';
        const username = pick(correlationId, `${prefix}.username`, uriUser?.username, value('username'));
        const password = pick(correlationId, `${prefix}.password`, uriUser?.password, value('password'));
        const tls: MqttTlsSources = tlsSources(correlationId, credential);
        const tlsKey = firstTlsKey(tls);
        if (tlsKey !== undefined && !servers.some((s) => s.protocol === 'mqtts' || s.protocol === 'wss')) {
            // MQTT.js would quietly switch such a connection to TLS, or ignore the files.
            throw new ConfigException(cid(correlationId), MqttErrorCode.BadTls,
                `MQTT TLS setting ${tlsKey} is set, but no connection uses mqtts or wss`).withDetails('key', tlsKey);
        }
        return {
            servers,
            username,
            password,
            tls,
            uriOptions,
            displayUri: servers.map(displayServer).join(','),
        };
    }

    /** The configured connections with the configuration key each came from, in order. */
    private configuredConnections(): { key: string; params: ConnectionParams }[] {
        const result: { key: string; params: ConnectionParams }[] = [];
        const single = this._config.getSection('connection');
        if (single.length() > 0) result.push({ key: 'connection', params: new ConnectionParams(single) });
        const many = this._config.getSection('connections');
        for (const name of many.getSectionNames()) {
            result.push({ key: `connections.${name}`, params: new ConnectionParams(many.getSection(name)) });
        }
        return result;
    }

    /** The configured connections, with those that name a discovery_key looked up in discovery services. */
    private async resolveConnections(correlationId: string | null): Promise<{ key: string; params: ConnectionParams }[]> {
        const configured = this.configuredConnections();
        if (configured.length === 0) {
            throw new ConfigException(cid(correlationId), MqttErrorCode.NoConnection,
                'MQTT connection is not configured: set connection.uri, connection.host or connections.N.*')
                .withDetails('key', 'connection');
        }
        const resolved: { key: string; params: ConnectionParams }[] = [];
        for (const { key, params } of configured) {
            if (!params.useDiscovery()) {
                resolved.push({ key, params });
                continue;
            }
            const found = await this.discover(correlationId, key, params.getDiscoveryKey());
            for (const result of found) {
                resolved.push({ key, params: new ConnectionParams(ConfigParams.mergeConfigs(params, result)) });
            }
        }
        return resolved;
    }

    private async discover(correlationId: string | null, key: string, discoveryKey: string): Promise<ConnectionParams[]> {
        const discoveries = (this._references?.getOptional<IDiscovery>(new Descriptor('*', 'discovery', '*', '*', '*'))) ?? [];
        if (discoveries.length === 0) {
            throw new ConfigException(cid(correlationId), MqttErrorCode.ResolveFailed,
                `MQTT connection ${key} names discovery key '${discoveryKey}', but no discovery service is referenced`)
                .withDetails('key', `${key}.discovery_key`);
        }
        const found: ConnectionParams[] = [];
        for (const discovery of discoveries) {
            try {
                found.push(...(await discovery.resolveAll(cid(correlationId), discoveryKey) ?? []));
            } catch (err) {
                throw new ConfigException(cid(correlationId), MqttErrorCode.ResolveFailed,
                    `MQTT connection ${key} could not be resolved through discovery`)
                    .withDetails('key', `${key}.discovery_key`).withCause(err as Error);
            }
        }
        if (found.length === 0) {
            throw new ConfigException(cid(correlationId), MqttErrorCode.ResolveFailed,
                `MQTT connection for discovery key '${discoveryKey}' was not found (${key}.discovery_key)`)
                .withDetails('key', `${key}.discovery_key`);
        }
        return found;
    }
}

interface ParsedConnection {
    server: MqttServer;
    username?: string;
    password?: string;
    query: Record<string, string>;
}

function parseConnection(correlationId: string | null, connection: ConnectionParams, key: string): ParsedConnection {
    const explicitProtocol = nonEmpty(connection.getAsNullableString('protocol'));
    const explicitHost = nonEmpty(connection.getAsNullableString('host'));
    const explicitPortText = nonEmpty(connection.getAsNullableString('port'));
    const explicitPath = nonEmpty(connection.getAsNullableString('path'));
    const uri = nonEmpty(connection.getAsNullableString('uri'));

    let protocol: MqttProtocol | null = null;
    if (explicitProtocol != null) {
        protocol = toMqttProtocol(explicitProtocol);
        if (protocol == null) throw unknownProtocol(correlationId, `${key}.protocol`, explicitProtocol);
    }
    const explicitPort = explicitPortText == null ? null : checkPort(correlationId, `${key}.port`, explicitPortText);

    if (uri == null) {
        if (explicitHost == null) {
            throw new ConfigException(cid(correlationId), MqttErrorCode.NoHost,
                `MQTT connection has no host: set ${key}.host or ${key}.uri`).withDetails('key', `${key}.host`);
        }
        const p = protocol ?? 'mqtt';
        return {
            server: makeServer(p, stripBrackets(explicitHost), explicitPort ?? defaultPort(p), explicitPath ?? null),
            query: {},
        };
    }

    let url: URL;
    try {
        url = new URL(uri);
    } catch (err) {
        throw new ConfigException(cid(correlationId), MqttErrorCode.BadUri, `MQTT connection uri cannot be parsed: ${key}.uri`)
            .withDetails('key', `${key}.uri`).withCause(err as Error);
    }
    if (url.username === '' && url.password === '' && uri.includes('@') && !atOnlyInKnownQuery(uri, url)) {
        // A password holding '/', '?' or '#' ends the address early: the parser then finds no user
        // info, takes part of the password for a host or port, and the rest would show in errors.
        // The message repeats nothing of the uri.
        throw new ConfigException(cid(correlationId), MqttErrorCode.BadUri,
            `MQTT connection uri has an '@' outside its user info: ${key}.uri. Percent-encode '/', '?', '#' and '@' ` +
            'in a user name or password (and \'@\' anywhere else)').withDetails('key', `${key}.uri`);
    }
    const scheme = url.protocol.replace(/:$/, '');
    const uriProtocol = toMqttProtocol(scheme);
    if (uriProtocol == null) throw unknownProtocol(correlationId, `${key}.uri`, scheme);
    if (protocol != null && protocol !== uriProtocol) {
        throw configConflict(correlationId, `${key}.protocol`, `protocol '${explicitProtocol}' differs from the uri scheme '${scheme}'`);
    }
    const host = stripBrackets(url.hostname);
    if (host === '') {
        throw new ConfigException(cid(correlationId), MqttErrorCode.NoHost, `MQTT connection uri has no host: ${key}.uri`)
            .withDetails('key', `${key}.uri`);
    }
    if (explicitHost != null && stripBrackets(explicitHost).toLowerCase() !== host.toLowerCase()) {
        throw configConflict(correlationId, `${key}.host`, `host '${explicitHost}' differs from the uri host '${host}'`);
    }
    const port = url.port === '' ? defaultPort(uriProtocol) : checkPort(correlationId, `${key}.uri`, url.port);
    if (explicitPort != null && explicitPort !== port) {
        throw configConflict(correlationId, `${key}.port`, `port ${explicitPort} differs from the uri port ${port}`);
    }
    const uriPath = url.pathname !== '' && url.pathname !== '/' ? url.pathname : null;
    if (explicitPath != null && uriPath != null && explicitPath !== uriPath) {
        throw configConflict(correlationId, `${key}.path`, `path '${explicitPath}' differs from the uri path '${uriPath}'`);
    }

    const query: Record<string, string> = {};
    for (const [name, value] of url.searchParams) {
        const configKey = URI_QUERY_KEYS[name];
        if (configKey == null) {
            throw new ConfigException(cid(correlationId), MqttErrorCode.BadUri,
                `MQTT connection uri has an unknown query parameter '${name}' (known: ${Object.keys(URI_QUERY_KEYS).join(', ')})`)
                .withDetails('key', `${key}.uri`).withDetails('parameter', name);
        }
        if (query[configKey] !== undefined && query[configKey] !== value) {
            throw configConflict(correlationId, `${key}.uri`, `query parameter for '${configKey}' is given twice`);
        }
        query[configKey] = value;
    }

    return {
        server: makeServer(uriProtocol, host, port, explicitPath ?? uriPath ?? null),
        username: decodeUserInfo(correlationId, key, url.username),
        password: decodeUserInfo(correlationId, key, url.password),
        query,
    };
}

/**
 * True when every '@' of a uri without user info is in a query made of known parameters (an
 * '@' in a client_id, say). Otherwise the '@' most likely ended a password holding '/', '?' or '#'.
 */
function atOnlyInKnownQuery(uri: string, url: URL): boolean {
    const queryStart = uri.indexOf('?');
    if (queryStart < 0 || uri.indexOf('@') < queryStart || url.hash.includes('@')) return false;
    return [...url.searchParams.keys()].every((name) => URI_QUERY_KEYS[name] !== undefined);
}

function decodeUserInfo(correlationId: string | null, key: string, value: string): string | undefined {
    if (value === '') return undefined;
    try {
        return decodeURIComponent(value);
    } catch {
        // The message does not repeat the value: it may be a password.
        throw new ConfigException(cid(correlationId), MqttErrorCode.BadUri,
            `MQTT connection uri has malformed percent-encoding in its user info: ${key}.uri`).withDetails('key', `${key}.uri`);
    }
}

/**
 * MQTT.js fails over between servers that share one transport setting: TCP or TLS servers,
 * or WebSocket servers with one path. Mixing them would connect some servers wrongly.
 */
function checkFailover(correlationId: string | null, keys: string[], servers: MqttServer[]): void {
    if (servers.length < 2) return;
    const first = servers[0];
    const isWs = (s: MqttServer): boolean => s.protocol === 'ws' || s.protocol === 'wss';
    servers.forEach((server, i) => {
        if (isWs(server) !== isWs(first)) {
            throw configConflict(correlationId, keys[i], 'failover servers must all use WebSocket (ws, wss) or all use TCP (mqtt, mqtts)');
        }
        if (server.path !== first.path) {
            throw configConflict(correlationId, `${keys[i]}.path`, `failover WebSocket servers must share one path ('${first.path}')`);
        }
    });
}

function makeServer(protocol: MqttProtocol, host: string, port: number, path: string | null): MqttServer {
    if (protocol === 'ws' || protocol === 'wss') return { protocol, host, port, path: path ?? DEFAULT_WS_PATH };
    return { protocol, host, port };
}

function checkPort(correlationId: string | null, key: string, text: string): number {
    const port = /^\d+$/.test(text.trim()) ? Number(text.trim()) : NaN;
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
        throw new ConfigException(cid(correlationId), MqttErrorCode.BadPort,
            `MQTT connection port must be an integer from 1 to 65535: ${key} is '${text}'`).withDetails('key', key);
    }
    return port;
}

function unknownProtocol(correlationId: string | null, key: string, value: string): ConfigException {
    return new ConfigException(cid(correlationId), MqttErrorCode.UnknownProtocol,
        `MQTT protocol '${value}' is not supported (${key}); use mqtt, mqtts, ws or wss (aliases tcp, ssl, tls)`)
        .withDetails('key', key);
}


/** Chooses between a value from the uri and one from its own key; both given and different is a conflict. */
function pick(correlationId: string | null, key: string, fromUri: string | undefined, fromKey: string | undefined): string | undefined {
    if (fromUri !== undefined && fromKey !== undefined && fromUri !== fromKey) {
        // The message names the key, never the values: they may be secrets.
        throw configConflict(correlationId, key, 'the value differs from the one in the connection uri');
    }
    return fromKey ?? fromUri;
}

function stripBrackets(host: string): string {
    return host.startsWith('[') && host.endsWith(']') ? host.substring(1, host.length - 1) : host;
}

function displayServer(server: MqttServer): string {
    const host = server.host.includes(':') ? `[${server.host}]` : server.host;
    return `${server.protocol}://${host}:${server.port}${server.path ?? ''}`;
}
