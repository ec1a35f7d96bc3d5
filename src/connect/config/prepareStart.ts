import { ConfigException, type ConfigParams } from 'pip-services3-commons-nodex';

import { cid } from '../../shared/pip';
import type { MqttConnectionResolver, MqttResolvedConnection } from './MqttConnectionResolver';
import { readSettings, type MqttConnectionSettings } from './MqttConnectionSettings';
import { MqttErrorCode } from '../errors/MqttErrorCode';
import { loadTls, type MqttTlsOptions } from './MqttTls';

/** Everything a connection needs to start a client: where, how, and with which TLS material. */
export interface MqttStartPlan {
    readonly resolved: MqttResolvedConnection;
    readonly settings: MqttConnectionSettings;
    /** The loaded TLS options when a server uses mqtts or wss. */
    readonly tls?: MqttTlsOptions;
}

/**
 * Reads and checks the whole configuration before any connection is made: brokers and
 * credentials (from config, discovery and credential stores), options, and TLS files.
 *
 * @throws ConfigException naming the key at fault.
 */
export async function prepareStart(
    correlationId: string | null, resolver: MqttConnectionResolver, config: ConfigParams, generatedClientId: string,
): Promise<MqttStartPlan> {
    const resolved = await resolver.resolve(correlationId);
    const settings = readSettings(correlationId, config, resolved.uriOptions, generatedClientId);
    const usesTls = resolved.servers.some((s) => s.protocol === 'mqtts' || s.protocol === 'wss');
    if (!usesTls) {
        if (settings.sslServerName !== undefined) {
            throw new ConfigException(cid(correlationId), MqttErrorCode.BadTls,
                'MQTT TLS setting options.ssl_server_name is set, but no connection uses mqtts or wss')
                .withDetails('key', 'options.ssl_server_name');
        }
        return { resolved, settings };
    }
    const tls = await loadTls(correlationId, resolved.tls, settings.sslServerName, settings.sslRejectUnauthorized);
    return { resolved, settings, tls };
}
