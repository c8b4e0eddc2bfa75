/**
 * The one DynamoDB table (`pk`/`sk`, TTL on `expiresAt`). `GlobalStateTable` creates it, as a
 * global table with a replica in every region of the rollout, inside the table stack (nothing
 * else lives there, so no failed service resource can roll it back half-owned). `StateTable` is
 * a region's handle on its local replica, by the table's (fixed) name: grants name exact
 * actions, never `dynamodb:*`.
 */
import { RemovalPolicy, Stack } from 'aws-cdk-lib';
import { AttributeType, Billing, TableV2 } from 'aws-cdk-lib/aws-dynamodb';
import { Grant, type IGrantable } from 'aws-cdk-lib/aws-iam';
import { Construct } from 'constructs';

/** Data-plane actions a component may be granted. */
export type TableAction = 'GetItem' | 'PutItem' | 'UpdateItem' | 'DeleteItem' | 'Query';

/** Props of the global table. */
export interface GlobalStateTableProps {
  tableName: string;
  /** Regions that get a replica besides the stack's own. */
  replicaRegions: string[];
  /** Replicas whose deletion protection is lifted, so an update can remove them (regions leaving). */
  unprotectedReplicas?: string[];
}

/** The global table itself (in the table stack's region, with its replicas). */
export class GlobalStateTable extends Construct {
  readonly table: TableV2;

  constructor(scope: Construct, id: string, props: GlobalStateTableProps) {
    super(scope, id);
    this.table = new TableV2(this, 'Table', {
      tableName: props.tableName,
      partitionKey: { name: 'pk', type: AttributeType.STRING },
      sortKey: { name: 'sk', type: AttributeType.STRING },
      billing: Billing.onDemand(),
      timeToLiveAttribute: 'expiresAt',
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      deletionProtection: true,
      // Identities and their secrets live here: never deleted with the stack.
      removalPolicy: RemovalPolicy.RETAIN,
      // Sorted: reordering the non-home regions in `regions` changes nothing in the template.
      replicas: [...props.replicaRegions]
        .sort()
        .map((region) =>
          props.unprotectedReplicas?.includes(region) ? { region, deletionProtection: false } : { region },
        ),
    });
  }
}

/** Props of a region's handle on the table. */
export interface StateTableProps {
  tableName: string;
  /**
   * The table's home region (the table stack's). Functions claim one-time codes on the home
   * replica, so `grantWithHome` also grants there; absent or equal to the stack's region, only
   * the local replica.
   */
  homeRegion?: string;
  /**
   * Every region with a replica. `grantWithHome` grants on each of them: the claims region can be
   * moved to any of them at run time (`rendezvous claims-region`), with no redeploy.
   */
  regions?: string[];
}

/** A region's view of the state table: its local replica, by name. */
export class StateTable extends Construct {
  readonly tableName: string;
  /** ARN of the table (replica) in this stack's region. */
  readonly tableArn: string;
  /** The home region, when it is not this stack's. */
  readonly homeRegion?: string;
  /** ARN of the same table in the home region (the home replica), when it is not this one. */
  readonly homeTableArn?: string;
  /** ARNs of the other regions' replicas a claims move may send this region's claims to. */
  readonly claimsTableArns: string[];

  constructor(scope: Construct, id: string, props: StateTableProps) {
    super(scope, id);
    this.tableName = props.tableName;
    this.tableArn = Stack.of(this).formatArn({
      service: 'dynamodb',
      resource: 'table',
      resourceName: props.tableName,
    });
    const stack = Stack.of(this);
    if (props.homeRegion && props.homeRegion !== stack.region) {
      this.homeRegion = props.homeRegion;
      // A global table has the same name in every region: the home replica is this ARN there.
      this.homeTableArn = stack.formatArn({
        service: 'dynamodb',
        region: props.homeRegion,
        resource: 'table',
        resourceName: props.tableName,
      });
    }
    const others = [...new Set([props.homeRegion, ...(props.regions ?? [])])].filter(
      (r): r is string => !!r && r !== stack.region,
    );
    this.claimsTableArns = others
      .sort()
      .map((region) =>
        stack.formatArn({ service: 'dynamodb', region, resource: 'table', resourceName: props.tableName }),
      );
  }

  /** Grants exactly `actions` on this region's table to `grantee`. */
  grant(grantee: IGrantable, actions: TableAction[]): Grant {
    return Grant.addToPrincipal({
      grantee,
      actions: actions.map((a) => `dynamodb:${a}`),
      resourceArns: [this.tableArn],
    });
  }

  /**
   * Grants `local` on this region's replica and `home` wherever codes may be claimed: this
   * replica, the deployed claims region's and, with `regions`, every other one (a claims move,
   * `rendezvous claims-region`, needs no redeploy). For code that does different things on each,
   * so the local replica gets no action only the claims need beyond those. test/infra/grants.test.ts
   * derives both lists from what the code calls.
   */
  grantByReplica(grantee: IGrantable, actions: { local: TableAction[]; home: TableAction[] }): void {
    const sorted = (xs: TableAction[]) => [...new Set(xs)].sort().map((a) => `dynamodb:${a}`);
    Grant.addToPrincipal({
      grantee,
      actions: sorted([...actions.local, ...actions.home]),
      resourceArns: [this.tableArn],
    });
    if (this.claimsTableArns.length > 0)
      Grant.addToPrincipal({ grantee, actions: sorted(actions.home), resourceArns: this.claimsTableArns });
  }

  /**
   * Grants exactly `actions` on this region's replica and on every replica codes may be claimed
   * on: the deployed claims region's and, with `regions`, every other one.
   */
  grantWithHome(grantee: IGrantable, actions: TableAction[]): Grant {
    return Grant.addToPrincipal({
      grantee,
      actions: actions.map((a) => `dynamodb:${a}`),
      resourceArns: [this.tableArn, ...this.claimsTableArns],
    });
  }
}
