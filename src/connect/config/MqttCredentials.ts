import { ConfigException, ConfigParams, Descriptor, type IReferences } from 'pip-services3-commons-nodex';
import type { ICredentialStore } from 'pip-services3-components-nodex';

import { cid, nonEmpty } from '../../shared/pip';
import { MqttErrorCode } from '../errors/MqttErrorCode';
import { configConflict } from '../errors/MqttErrors';
import type { MqttTlsSources } from './MqttTls';

/** A credential to use: its values, and the configuration key they are reported under. */
export interface MqttCredential {
    /** `credential` or `credentials.N`: errors name keys below it. */
    readonly key: string;
    readonly values: ConfigParams;
}

/**
 * The configured credentials with their keys: `credentials.N.*` when there are any (as in
 * Pip.Services' CredentialParams.manyFromConfig, `credential.*` is then ignored), else `credential.*`.
 */
function configuredCredentials(config: ConfigParams): MqttCredential[] {
    const many = config.getSection('credentials');
    const names = many.getSectionNames();
    if (names.length > 0) return names.map((name) => ({ key: `credentials.${name}`, values: many.getSection(name) }));
    const single = config.getSection('credential');
    return single.length() > 0 ? [{ key: 'credential', values: single }] : [];
}

/**
 * Finds the credential to use, as Pip.Services' CredentialResolver chooses it: the first one
 * configured without a `store_key`; otherwise the first with a `store_key` found in a referenced
 * ICredentialStore. A stored credential is completed by the keys configured beside its
 * `store_key`; a key set in both places must agree.
 *
 * @throws ConfigException `MQTT_RESOLVE_FAILED` (a store failed, or no store has the key) or
 *   `MQTT_CONFLICTING_CONFIG` (naming the key, never the values).
 */
export async function resolveCredential(
    correlationId: string | null, config: ConfigParams, references: IReferences | null,
): Promise<MqttCredential | null> {
    const configured = configuredCredentials(config);
    const plain = configured.find((c) => nonEmpty(c.values.getAsNullableString('store_key')) === undefined);
    if (plain !== undefined) return plain;
    if (configured.length === 0) return null;

    const stores = references?.getOptional<ICredentialStore>(new Descriptor('*', 'credential-store', '*', '*', '*')) ?? [];
    for (const credential of configured) {
        const storeKey = credential.values.getAsString('store_key');
        for (const store of stores) {
            let found: ConfigParams | null;
            try {
                found = await store.lookup(cid(correlationId), storeKey);
            } catch (err) {
                throw new ConfigException(cid(correlationId), MqttErrorCode.ResolveFailed,
                    `MQTT credential ${credential.key} could not be looked up in a credential store`)
                    .withDetails('key', `${credential.key}.store_key`).withCause(err as Error);
            }
            if (found != null) return { key: credential.key, values: complete(correlationId, credential, found) };
        }
    }
    const first = configured[0];
    throw new ConfigException(cid(correlationId), MqttErrorCode.ResolveFailed,
        `MQTT credential for ${first.key}.store_key '${configured.map((c) => c.values.getAsString('store_key')).join(', ')}' was not found` +
        (stores.length === 0 ? ': no credential store is referenced' : ''))
        .withDetails('key', `${first.key}.store_key`);
}

/** A stored credential with the keys configured beside its store_key that it lacks. */
function complete(correlationId: string | null, credential: MqttCredential, stored: ConfigParams): ConfigParams {
    const merged = new ConfigParams(stored);
    for (const name of credential.values.getKeys()) {
        if (name === 'store_key') continue;
        const configured = nonEmpty(credential.values.getAsNullableString(name));
        if (configured === undefined) continue;
        const fromStore = nonEmpty(stored.getAsNullableString(name));
        if (fromStore !== undefined && fromStore !== configured) {
            throw configConflict(correlationId, `${credential.key}.${name}`, 'the configured value differs from the one in the credential store');
        }
        merged.setAsObject(name, configured);
    }
    return merged;
}

/** The TLS files and passphrase of a credential; `ssl_cert_file` is an alias of `ssl_crt_file`. */
export function tlsSources(correlationId: string | null, credential: MqttCredential | null): MqttTlsSources {
    const prefix = credential?.key ?? 'credential';
    const value = (name: string): string | undefined => nonEmpty(credential?.values.getAsNullableString(name));
    const crt = value('ssl_crt_file');
    const cert = value('ssl_cert_file');
    if (crt !== undefined && cert !== undefined && crt !== cert) {
        throw configConflict(correlationId, `${prefix}.ssl_cert_file`, `it names another file than its alias ${prefix}.ssl_crt_file`);
    }
    return {
        prefix,
        certName: cert !== undefined && crt === undefined ? 'ssl_cert_file' : 'ssl_crt_file',
        caFile: value('ssl_ca_file'),
        certFile: crt ?? cert,
        keyFile: value('ssl_key_file'),
        passphrase: value('ssl_passphrase'),
    };
}
