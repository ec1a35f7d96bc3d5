import {
    ConfigException, ConfigParams, DependencyResolver, Descriptor, References, type IReferences,
} from 'pip-services3-commons-nodex';

import { NO_CID } from '../shared/pip';
import { MqttConnection } from '../connect/MqttConnection';
import { MqttErrorCode } from '../connect/errors/MqttErrorCode';

/** The connection a queue looks for in its references, unless `dependencies.connection` says otherwise. */
const CONNECTION_LOCATOR = new Descriptor('*', 'connection', 'mqtt', '*', '1.0');

/**
 * Which connection a queue uses: the MqttConnection found in its references (shared: the queue
 * never closes it), or else one of its own (owned), made from the queue's configuration.
 * Internal to the package.
 */
export class MqttQueueConnections {
    private _config: ConfigParams = new ConfigParams();
    private _references: IReferences | null = null;
    private _dependencies = MqttQueueConnections.newDependencyResolver();
    private _shared: MqttConnection | null = null;
    private _local: MqttConnection | null = null;

    private static newDependencyResolver(): DependencyResolver {
        const resolver = new DependencyResolver();
        resolver.put('connection', CONNECTION_LOCATOR);
        return resolver;
    }

    public configure(config: ConfigParams): void {
        this._config = config;
        this._dependencies.configure(config);
    }

    /** @throws ConfigException `MQTT_BAD_REFERENCE` when the component found is not an MqttConnection. */
    public setReferences(references: IReferences, queueName: string): void {
        this._references = references;
        this._dependencies.setReferences(references);
        const found = this._dependencies.getOneOptional<unknown>('connection');
        if (found != null && !isMqttConnection(found)) {
            throw new ConfigException(NO_CID, MqttErrorCode.BadReference,
                `The connection referenced by MQTT queue ${queueName} is not an MqttConnection`);
        }
        this._shared = found ?? null;
    }

    public unsetReferences(): void {
        this._references = null;
        this._shared = null;
        this._dependencies = MqttQueueConnections.newDependencyResolver();
        this._dependencies.configure(this._config);
    }

    /** True when `connection` is the queue's own. */
    public owns(connection: MqttConnection | null): connection is MqttConnection {
        return connection != null && connection === this._local;
    }

    /** The connection to open: the shared one, or the queue's own, configured anew unless it is open. */
    public pick(): MqttConnection {
        if (this._shared) return this._shared;
        this._local ??= new MqttConnection();
        if (!this._local.isOpen()) {
            this._local.configure(this._config);
            // configure() and setReferences() add to what they had (credentials, loggers, counters): start afresh.
            this._local.unsetReferences();
            this._local.setReferences(this._references ?? new References());
        }
        return this._local;
    }
}

function isMqttConnection(value: unknown): value is MqttConnection {
    if (value instanceof MqttConnection) return true;
    const candidate = value as Partial<Record<keyof MqttConnection, unknown>>;
    return typeof value === 'object' && value != null
        && (['open', 'close', 'isOpen', 'publish', 'subscribe', 'unsubscribe', 'getConnection'] as const)
            .every((method) => typeof candidate[method] === 'function');
}
