import { inspect } from 'node:util';

import { ConfigException, ConfigParams, Descriptor, type IReferenceable, type IReferences, type IConfigurable } from 'pip-services3-commons-nodex';
import { ConnectionParams, type IDiscovery } from 'pip-services3-components-nodex';

import { MqttErrorCode } from '../errors/MqttErrorCode';
import { resolveCredential, tlsSources } from './MqttCredentials';
import { badOption, configConflict } from '../errors/MqttErrors';
import { mqttBinaryProblem, mqttStringProblem } from '../MqttStrings';
import { firstTlsKey, type MqttTlsSources } from './MqttTls';
import { cid, nonEmpty } from '../../shared/pip';
import { checkFailover, displayServer, parseConnection, type MqttServer } from './MqttUri';
import { redactConfig } from './redact';

/** What [[MqttConnectionResolver.resolve]] returns: where the broker is and who we are. */
export interface MqttResolvedConnection {
    /** The brokers, in failover order (at least one). */
    readonly servers: readonly MqttServer[];
    readonly username?: string;
    readonly password?: string;
    /** Where the user name and password are configured (`credential` or `credentials.N`), for errors. */
    readonly credentialKey: string;
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
        // CONNECT carries the user name as an MQTT string and the password as binary data.
        const usernameProblem = username !== undefined ? mqttStringProblem(username) : null;
        if (usernameProblem !== null) throw badOption(correlationId, `${prefix}.username`, usernameProblem);
        const passwordProblem = password !== undefined ? mqttBinaryProblem(password) : null;
        if (passwordProblem !== null) throw badOption(correlationId, `${prefix}.password`, passwordProblem);
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
            credentialKey: prefix,
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
                `MQTT connection ${key}.discovery_key is '${discoveryKey}', but no discovery service is referenced`)
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

/** Chooses between a value from the uri and one from its own key; both given and different is a conflict. */
function pick(correlationId: string | null, key: string, fromUri: string | undefined, fromKey: string | undefined): string | undefined {
    if (fromUri !== undefined && fromKey !== undefined && fromUri !== fromKey) {
        // The message names the key, never the values: they may be secrets.
        throw configConflict(correlationId, key, 'the value differs from the one in the connection uri');
    }
    return fromKey ?? fromUri;
}
