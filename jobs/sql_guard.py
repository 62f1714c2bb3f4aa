"""What `recpipe sql` runs: statements that only read the pipeline tables.

The statement is parsed with Spark's own parser (the one `spark.sql` uses) and every node of the parsed
plan is checked, subqueries, CTE definitions and the statement under EXPLAIN included:

- query nodes (SELECT, WITH, joins, windows, PIVOT, VALUES, set operations, time travel, pipe syntax, ...)
  and a few commands that only show things (DESCRIBE, SHOW TABLES/COLUMNS/FUNCTIONS, EXPLAIN, and SET
  without a value) pass; every other node is refused: INSERT (also INSERT OVERWRITE DIRECTORY), CREATE,
  DROP, ALTER, MERGE, UPDATE, DELETE, CACHE, USE, ADD JAR, SET key=value and RESET (Spark settings are
  given with --conf), DECLARE, EXECUTE IMMEDIATE, scripts (BEGIN ... END), TRANSFORM ... USING (runs a
  program), and anything this list does not know yet;
- a file read `format.`path`` (e.g. parquet.`/data/x`) must name a path inside the warehouse, without
  glob characters;
- reflect(), java_method() and try_reflect() (they call Java methods) are refused.

A statement Spark cannot parse passes through: `spark.sql` then reports the parse error itself.
"""

from __future__ import annotations

import os
import posixpath

from pyspark.sql import SparkSession

from features.errors import PipelineInputError

QUERY_NODES = frozenset(
    {
        "Project",
        "Filter",
        "Aggregate",
        "Sort",
        "GlobalLimit",
        "LocalLimit",
        "Offset",
        "Tail",
        "Distinct",
        "Deduplicate",
        "Union",
        "Intersect",
        "Except",
        "Join",
        "LateralJoin",
        "AsOfJoin",
        "Generate",
        "Expand",
        "Pivot",
        "Unpivot",
        "Transpose",
        "Sample",
        "SubqueryAlias",
        "OneRowRelation",
        "LocalRelation",
        "Range",
        "Window",
        "WithWindowDefinition",
        "UnresolvedWith",
        "WithCTE",
        "CTERelationDef",
        "CTERelationRef",
        "UnionLoop",
        "UnionLoopRef",
        "UnresolvedHint",
        "ResolvedHint",
        "RepartitionByExpression",
        "Repartition",
        "RebalancePartitions",
        "PipeOperator",
        "UnresolvedRelation",
        "RelationTimeTravel",
        "UnresolvedInlineTable",
        "UnresolvedTableValuedFunction",
        "UnresolvedTVFAliases",
        "UnresolvedSubqueryColumnAliases",
        "UnresolvedHaving",
        "UnresolvedQualify",
    }
)
SHOW_COMMANDS = frozenset(
    {
        "DescribeRelation",
        "DescribeColumn",
        "DescribeFunction",
        "ShowTables",
        "ShowViews",
        "ShowColumns",
        "ShowFunctions",
        "ExplainCommand",
        "SetCommand",
        # what they name
        "UnresolvedTableOrView",
        "UnresolvedNamespace",
        "CurrentNamespace$",
        "UnresolvedFunctionName",
    }
)
JAVA_FUNCTIONS = frozenset({"reflect", "java_method", "try_reflect"})
STATEMENT_NAMES = {  # the refusal names the statement as the analyst wrote it
    "InsertIntoStatement": "INSERT",
    "InsertIntoDir": "INSERT OVERWRITE DIRECTORY",
    "CreateTable": "CREATE TABLE",
    "CreateTableAsSelect": "CREATE TABLE AS SELECT",
    "ReplaceTable": "REPLACE TABLE",
    "CreateView": "CREATE VIEW",
    "CreateViewCommand": "CREATE VIEW",
    "CreateNamespace": "CREATE DATABASE",
    "DropTable": "DROP TABLE",
    "DropView": "DROP VIEW",
    "DropNamespace": "DROP DATABASE",
    "MergeIntoTable": "MERGE",
    "UpdateTable": "UPDATE",
    "DeleteFromTable": "DELETE",
    "TruncateTable": "TRUNCATE",
    "CacheTable": "CACHE TABLE",
    "UncacheTable": "UNCACHE TABLE",
    "ResetCommand": "RESET",
    "SetCatalogAndNamespace": "USE",
    "AddJarsCommand": "ADD JAR",
    "AddFilesCommand": "ADD FILE",
    "AddArchivesCommand": "ADD ARCHIVE",
    "LoadData": "LOAD DATA",
    "ScriptTransformation": "TRANSFORM ... USING",
    "CompoundBody": "a SQL script",
    "UnresolvedExecuteImmediate": "EXECUTE IMMEDIATE",
    "CreateVariable": "DECLARE",
    "SetVariable": "SET VAR",
    "CreateFunction": "CREATE FUNCTION",
    "DropFunction": "DROP FUNCTION",
    "RefreshTable": "REFRESH TABLE",
}
ALTER_NODES = frozenset(
    {
        "AddColumns",
        "DropColumns",
        "RenameColumn",
        "ReplaceColumns",
        "AlterColumns",
        "AlterTableCommand",
        "SetTableProperties",
        "UnsetTableProperties",
        "SetTableLocation",
        "SetTableSerDeProperties",
        "RenameTable",
        "AddPartitions",
        "DropPartitions",
        "RenamePartitions",
        "RecoverPartitions",
        "AlterTableClusterBy",
        "AddConstraint",
        "DropConstraint",
        "AlterViewAs",
        "SetViewProperties",
        "UnsetViewProperties",
    }
)
GLOB_CHARACTERS = set("*?[]{}\\")


def check_read_only(spark: SparkSession, query: str, warehouse: str) -> None:
    """Raises PipelineInputError (one line) when `query` would write or change anything, call Java
    methods, or read files outside `warehouse`."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None  # a classic session: its JVM gateway is up
    try:
        plan = spark._jsparkSession.sessionState().sqlParser().parsePlan(query)
    except Exception:  # a parse error: spark.sql reports it with its position
        return
    subquery = jvm.java.lang.Class.forName("org.apache.spark.sql.catalyst.expressions.SubqueryExpression")
    plans = [plan]
    while plans:
        node = plans.pop()
        kind = node.getClass().getSimpleName()
        if kind not in QUERY_NODES and kind not in SHOW_COMMANDS:
            statement = "ALTER" if kind in ALTER_NODES else STATEMENT_NAMES.get(kind, kind)
            raise PipelineInputError(
                f"recpipe sql only reads tables: {statement} is refused "
                f"(save a result with --out FILE.parquet or FILE.csv)"
            )
        if kind == "SetCommand" and _sets_a_value(node):
            raise PipelineInputError("recpipe sql does not change settings: give Spark settings as --conf KEY=VALUE")
        if kind in ("UnresolvedRelation", "UnresolvedTableOrView"):
            _check_file_read(spark, _strings(node.multipartIdentifier()), warehouse)
        if kind == "ExplainCommand":
            plans.append(node.logicalPlan())
        if kind == "RelationTimeTravel":
            plans.append(node.relation())
        plans += _items(node.children()) + _items(node.innerChildren())
        expressions = _items(node.expressions())
        while expressions:
            expression = expressions.pop()
            if subquery.isInstance(expression):
                plans.append(expression.plan())
            if expression.getClass().getSimpleName() == "UnresolvedFunction":
                name = _strings(expression.nameParts())[-1].lower()
                if name in JAVA_FUNCTIONS:
                    raise PipelineInputError(f"recpipe sql does not call Java methods: {name}() is refused")
            expressions += _items(expression.children())


def _items(sequence) -> list:
    return [sequence.apply(i) for i in range(sequence.size())]


def _strings(sequence) -> list[str]:
    return [str(part) for part in _items(sequence)]


def _sets_a_value(node) -> bool:
    """SET key=value (SET, SET key and SET -v only show)."""
    pair = node.kv()
    return bool(pair.isDefined() and pair.get()._2().isDefined())


def _check_file_read(spark: SparkSession, parts: list[str], warehouse: str) -> None:
    """`format.`path``: Spark reads the path as files of that format when `format` names a data source."""
    if len(parts) < 2 or not _is_data_source(spark, parts[-2]):
        return
    path = parts[-1]
    shown = f"{parts[-2]}.`{path}`"
    if GLOB_CHARACTERS & set(path):
        raise PipelineInputError(
            f"recpipe sql reads files only under the warehouse {warehouse}, without globs: {shown} is refused"
        )
    if not _inside(path, warehouse):
        raise PipelineInputError(f"recpipe sql reads files only under the warehouse {warehouse}: {shown} is outside it")


def _is_data_source(spark: SparkSession, name: str) -> bool:
    jvm = spark.sparkContext._jvm
    try:
        assert jvm is not None  # a classic session: its JVM gateway is up
        jvm.org.apache.spark.sql.execution.datasources.DataSource.lookupDataSource(
            name, spark._jsparkSession.sessionState().conf()
        )
        return True
    except Exception:  # ClassNotFoundException: a database name, not a format
        return False


def _inside(path: str, root: str) -> bool:
    def normal(location: str) -> str:
        if location.startswith("file:"):
            location = "/" + location.removeprefix("file:").lstrip("/")
        if "://" in location:  # another file system: compare the normalized URIs
            scheme, _, rest = location.partition("://")
            return f"{scheme.lower()}://{posixpath.normpath(rest)}"
        return os.path.realpath(os.path.abspath(location))

    path, root = normal(path), normal(root)
    return path == root or path.startswith(root.rstrip("/") + "/")
